module github.com/raftkit/raft

go 1.26

require (
	github.com/anishathalye/porcupine v1.3.1
	github.com/golang/mock v1.6.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
	go.uber.org/zap v1.28.0
)

require (
	go.uber.org/multierr v1.10.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
