// Checks select_segments against a sorted reference: random scores (with and without ties),
// random masks and "all", dot and l2 keys, segment lengths, candidate counts up to the
// kernel's maximum, a slot base past 0, and that nothing outside the launch's segments is
// written. Exit status 0 when every segment matches.
#ifndef TRIALS
#define TRIALS 6
#endif
int main() {
    std::mt19937 rng(7);
    int fails = 0;
    for (int trial = 0; trial < TRIALS; trial++) {
        int nq = 3, tile = 1000 + trial * 37, seg_len = (trial % 3 == 0) ? 1 << 30 : 300 + trial;
        if (seg_len > tile) seg_len = tile;
        int per = (trial % 4 == 0) ? 128 : 9 + trial;
        int neg_l2 = trial % 2;
        bool ties = trial % 3 == 1;
        unsigned base = (trial % 5) * 4096;
        int segs = (tile + seg_len - 1) / seg_len;
        std::vector<float> scores(nq * tile), norms(tile), qn(nq);
        std::uniform_real_distribution<float> U(-1, 1);
        for (auto& x : scores) { x = U(rng); if (ties) x = std::round(x * 5) / 5; }
        for (auto& x : norms) x = U(rng) + 2;
        for (auto& x : qn) x = U(rng) + 2;
        int slots_total = base + tile;
        int words = (slots_total + 31) / 32;
        std::vector<unsigned> masks(2 * words);
        for (auto& w : masks) w = rng();
        std::vector<int> moq = {-1, 0, 1};
        int total_segments = segs + 2, seg_offset = 1;
        std::vector<float> ok(nq * total_segments * per, NAN);
        std::vector<unsigned> os(nq * total_segments * per, 0), oa(nq * total_segments, 77);
        blockDim = {256, 1, 1};
        for (int q = 0; q < nq; q++) for (int sg = 0; sg < segs; sg++) {
            blockIdx = {(unsigned)sg, (unsigned)q, 0};
            std::barrier<> b(256);
            bar = &b;
            std::vector<std::thread> th;
            for (unsigned t = 0; t < 256; t++) th.emplace_back([&, t] {
                threadIdx = {t, 0, 0};
                select_segments(scores.data(), tile, seg_len, per, masks.data(), words, moq.data(),
                    base, norms.data(), neg_l2, qn.data(), ok.data(), os.data(), oa.data(), seg_offset, total_segments);
            });
            for (auto& x : th) x.join();
        }
        // Reference.
        for (int q = 0; q < nq; q++) for (int sg = 0; sg < segs; sg++) {
            std::vector<std::pair<float, unsigned>> all;
            for (int i = sg * seg_len; i < std::min(tile, (sg + 1) * seg_len); i++) {
                unsigned slot = base + i;
                if (moq[q] >= 0 && !((masks[moq[q] * words + (slot >> 5)] >> (slot & 31)) & 1)) continue;
                float key = scores[q * tile + i];
                if (neg_l2) key = -(qn[q] + norms[i] - 2.0f * key);
                all.push_back({key, slot});
            }
            std::sort(all.begin(), all.end(), [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
            size_t out = (size_t)q * total_segments + seg_offset + sg;
            if (oa[out] != all.size()) { printf("trial %d q %d seg %d allowed %u want %zu\n", trial, q, sg, oa[out], all.size()); fails++; continue; }
            for (size_t r = 0; r < std::min<size_t>(per, all.size()); r++) {
                if (ok[out * per + r] != all[r].first || os[out * per + r] != all[r].second) {
                    printf("trial %d q %d seg %d rank %zu got (%g,%u) want (%g,%u)\n", trial, q, sg, r, ok[out*per+r], os[out*per+r], all[r].first, all[r].second);
                    fails++; break;
                }
            }
        }
        // Segments outside this launch untouched.
        if (oa[0] != 77) { printf("trial %d wrote outside its segments\n", trial); fails++; }
    }
    printf("%s (%d failures)\n", fails ? "FAIL" : "OK", fails);
    return fails != 0;
}
