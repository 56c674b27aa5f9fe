package raft

// Mocks of the two pluggable interfaces, for tests of the runtime's I/O
// order. Regenerate with `go generate` (needs mockgen v1.6.0:
// go install github.com/golang/mock/mockgen@v1.6.0).
//go:generate mockgen -source=transport.go -destination=mock_transport_test.go -package=raft -self_package=github.com/raftkit/raft
//go:generate mockgen -source=storage.go -destination=mock_storage_test.go -package=raft -self_package=github.com/raftkit/raft
