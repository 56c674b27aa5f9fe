// Command etcdserver is etcd's own server (go.etcd.io/etcd/server/v3's
// etcdmain), built from the Go module proxy for the kvstore comparison in
// bench/compare. `go install` refuses etcd's server module (its go.mod has
// replace directives), so this wrapper is its own module with etcd as an
// ordinary dependency. It takes etcd's flags unchanged.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
