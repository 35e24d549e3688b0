package main

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// takeTerminal makes devrun's own process group the terminal's foreground
// group when devrun runs in the foreground under another program (make):
// Ctrl-C then reaches devrun alone, which stops everything and exits 0, so
// make sees exit code 0 instead of dying of SIGINT itself ("make: ***
// Interrupt"). The returned function gives the terminal back. Without a
// terminal, or when devrun already leads its process group (started by an
// interactive shell), it changes nothing. Ctrl-Z is ignored while devrun
// holds the terminal: nothing above it could resume it.
func takeTerminal() (restore func()) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return func() {}
	}
	fd := tty.Fd()
	fg, err := getpgrp(fd)
	if err != nil || fg != syscall.Getpgrp() || fg == os.Getpid() {
		tty.Close()
		return func() {}
	}
	// A background group changing the terminal gets SIGTTOU unless it is
	// ignored.
	signal.Ignore(syscall.SIGTTOU, syscall.SIGTSTP, syscall.SIGTTIN)
	if err := syscall.Setpgid(0, 0); err != nil {
		tty.Close()
		return func() {}
	}
	if err := setpgrp(fd, os.Getpid()); err != nil {
		_ = syscall.Setpgid(0, fg)
		tty.Close()
		return func() {}
	}
	return func() {
		_ = setpgrp(fd, fg)
		tty.Close()
	}
}

func getpgrp(fd uintptr) (int, error) {
	var pgrp int32
	err := ioctl(fd, syscall.TIOCGPGRP, &pgrp)
	return int(pgrp), err
}

func setpgrp(fd uintptr, pgrp int) error {
	v := int32(pgrp)
	return ioctl(fd, syscall.TIOCSPGRP, &v)
}

func ioctl(fd, req uintptr, arg *int32) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(arg))); e != 0 {
		return e
	}
	return nil
}
