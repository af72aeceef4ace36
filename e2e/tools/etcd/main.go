// Command etcd builds the upstream etcd server binary from the pinned
// go.etcd.io/etcd/server/v3 module (same entry point as upstream's server/main.go).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
