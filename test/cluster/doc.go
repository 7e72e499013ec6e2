// Package cluster is the scale-out and fault harness (`make test-cluster`):
// a 3-member etcd cluster and two replicas of every service as separate
// processes on loopback, behind an edge router, under continuous load while
// the etcd leader and then one replica of each service are killed. Its test
// then checks what clients were told against what the system kept. The
// edge router is lib/edgerouter, with both replicas of a service behind
// each route.
package cluster
