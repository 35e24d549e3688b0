package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Where the time goes: CPU time of processes, read from /proc (Linux).

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on
// every Linux this runs on).
const clockTick = 10 * time.Millisecond

// procStat returns utime+stime and cutime+cstime (reaped children) of pid,
// and its parent pid.
func procStat(pid int) (self, children time.Duration, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(b)
	// The command name (field 2) may hold spaces: fields start after ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); ppid is field 4, utime..cstime 14..17.
	if len(f) < 15 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	return time.Duration(n(14)+n(15)) * clockTick, time.Duration(n(16)+n(17)) * clockTick, int(n(4)), nil
}

// processCPU is the CPU time pid has used so far (0 if unknown).
func processCPU(pid int) time.Duration {
	self, _, _, err := procStat(pid)
	if err != nil {
		return 0
	}
	return self
}

// clusterCPU is the CPU time used so far by the PostgreSQL server whose
// postmaster is pid: the postmaster, its running children (backends,
// walsenders, background processes) and the children it has reaped.
func clusterCPU(postmaster int) time.Duration {
	self, reaped, _, err := procStat(postmaster)
	if err != nil {
		return 0
	}
	total := self + reaped
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == postmaster {
			continue
		}
		s, _, ppid, err := procStat(pid)
		if err == nil && ppid == postmaster {
			total += s
		}
	}
	return total
}

// peakRSS is the peak resident set size of pid (VmHWM), 0 if unknown.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}
