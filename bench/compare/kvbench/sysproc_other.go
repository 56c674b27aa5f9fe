//go:build !linux

package kvbench

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
