package podrunner

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The two places where a pod here differs from a pod on a node: every pod
// shares 127.0.0.1, so each pod's ports are moved to free ones, and there is
// no mount namespace, so paths under a volume's mountPath are moved to the
// volume's folder. Both are done by rewriting the container's environment
// (and its command, args and workingDir), before the process starts.

// loopbackHosts are the hosts of an address that means "this pod".
var loopbackHosts = map[string]bool{
	"": true, podIP: true, "localhost": true, "0.0.0.0": true, "[::]": true, "[::1]": true,
}

// rewritePorts replaces, in s, every address host:port or :port whose host
// means this pod and whose port is in ports, by the same address on the
// moved port. It returns the result and the declared ports it moved.
func rewritePorts(s string, ports map[int]int) (string, []int) {
	var b strings.Builder
	var moved []int
	last := 0
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			continue
		}
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 {
			continue
		}
		port, err := strconv.Atoi(s[i+1 : j])
		to, ok := ports[port]
		if err != nil || !ok {
			i = j - 1
			continue
		}
		k := i
		for k > 0 && !strings.ContainsRune("/@,=; \t\"'", rune(s[k-1])) {
			k--
		}
		if !loopbackHosts[s[k:i]] {
			i = j - 1
			continue
		}
		b.WriteString(s[last : i+1])
		b.WriteString(strconv.Itoa(to))
		moved = append(moved, port)
		last = j
		i = j - 1
	}
	b.WriteString(s[last:])
	return b.String(), moved
}

// mountRewriter moves paths under mount points to host folders.
type mountRewriter []mountPoint

type mountPoint struct{ path, host string }

func newMountRewriter(m map[string]string) mountRewriter {
	r := make(mountRewriter, 0, len(m))
	for path, host := range m {
		r = append(r, mountPoint{filepath.Clean(path), host})
	}
	// Longest mount path first: /data/cache before /data.
	sort.Slice(r, func(i, j int) bool { return len(r[i].path) > len(r[j].path) })
	return r
}

// rewrite returns s with a leading mount path replaced by its folder. Only
// a value that is a path (the mount path itself or below it), or a flag
// --name=<such a path>, is moved.
func (r mountRewriter) rewrite(s string) string {
	if flag, value, ok := strings.Cut(s, "="); ok && strings.HasPrefix(flag, "-") {
		return flag + "=" + r.rewrite(value)
	}
	for _, m := range r {
		if s == m.path {
			return m.host
		}
		if rest, ok := strings.CutPrefix(s, m.path+"/"); ok {
			return filepath.Join(m.host, rest)
		}
	}
	return s
}

// portsOf lists a map's keys in order, for messages.
func portsOf(m map[int]bool) string {
	ps := make([]int, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	return fmt.Sprint(ps)
}
