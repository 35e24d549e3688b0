//go:build !(linux && (amd64 || arm64 || riscv64 || loong64))

package pgtest

// removeShm is not implemented here: a SIGKILLed postmaster's (small) System
// V segment outlives the cluster, as it would outside tests.
func removeShm(int) {}
