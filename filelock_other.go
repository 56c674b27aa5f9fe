//go:build !unix

package raft

import (
	"fmt"
	"os"
)

func lockDir(dir string) (*os.File, error) {
	return nil, fmt.Errorf("%w: FileStorage needs flock, which this platform lacks", ErrNotSupported)
}

func unlockDir(f *os.File) error { return f.Close() }
