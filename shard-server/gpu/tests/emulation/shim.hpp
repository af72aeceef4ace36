// A CPU emulation of the CUDA execution model, enough for vecshard's selection kernel: one
// std::thread per CUDA thread of a block, __syncthreads as a barrier, warp shuffles through a
// shared buffer (every thread of these kernels reaches each shuffle, so a block-wide barrier
// stands in for the warp's). Blocks run one after another. Used by tests/kernel_emulation.rs.

#include <algorithm>
#include <barrier>
#include <thread>
#include <vector>
#include <random>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <tuple>
using std::min;
struct dim3s { unsigned x, y, z; };
thread_local dim3s threadIdx;
dim3s blockIdx, blockDim;
static std::barrier<>* bar;
void __syncthreads() { bar->arrive_and_wait(); }
static unsigned long long shfl_buf[256];
template <class T> T __shfl_down_sync(unsigned, T v, int o) {
    unsigned t = threadIdx.x;
    std::memcpy(&shfl_buf[t], &v, sizeof(T));
    __syncthreads();
    T r = v;
    if ((t & 31) + o < 32) std::memcpy(&r, &shfl_buf[t + o], sizeof(T));
    __syncthreads();
    return r;
}
float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
