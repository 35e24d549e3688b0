//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package pgtest

import "syscall"

// removeShm removes a System V shared memory segment (shmctl IPC_RMID).
func removeShm(shmid int) {
	const ipcRmid = 0
	_, _, _ = syscall.Syscall(syscall.SYS_SHMCTL, uintptr(shmid), ipcRmid, 0)
}
