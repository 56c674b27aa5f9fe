package kvbench

import "syscall"

// sysProcAttr has the kernel kill a member if the process that started it
// dies first (killed with SIGKILL, say), so that no server outlives a
// benchmark run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
