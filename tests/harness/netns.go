package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"os/exec"
	"strings"
)

// Netns is a network namespace linked to the host's by a veth pair:
// HostIP (in the root namespace) and NSIP (inside) on a /30 of 198.18.0.0/15,
// the range set aside for network test hosts.
type Netns struct {
	Name   string
	HostIP string
	NSIP   string
	hostIf string
}

// NewNetns creates the namespace and its link. It needs root and iproute2.
func NewNetns() (*Netns, error) {
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("the ip command is missing; install it with: apt-get install -y iproute2")
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(b[:])
	n, err := rand.Int(rand.Reader, big.NewInt(64))
	if err != nil {
		return nil, err
	}
	third := 1 + int(b[0])%250
	base := 4 * int(n.Int64())
	ns := &Netns{
		Name:   "baton-" + id,
		HostIP: fmt.Sprintf("198.18.%d.%d", third, base+1),
		NSIP:   fmt.Sprintf("198.18.%d.%d", third, base+2),
		hostIf: "bh" + id,
	}
	peer := "bn" + id
	steps := [][]string{
		{"netns", "add", ns.Name},
		{"link", "add", ns.hostIf, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns.Name},
		{"addr", "add", ns.HostIP + "/30", "dev", ns.hostIf},
		{"link", "set", ns.hostIf, "up"},
		{"netns", "exec", ns.Name, "ip", "addr", "add", ns.NSIP + "/30", "dev", peer},
		{"netns", "exec", ns.Name, "ip", "link", "set", peer, "up"},
		{"netns", "exec", ns.Name, "ip", "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			ns.Close()
			return nil, err
		}
	}
	return ns, nil
}

// Wrap is the command prefix that runs a program inside the namespace.
func (n *Netns) Wrap() []string { return []string{"ip", "netns", "exec", n.Name} }

// Cut takes the link down: nothing crosses it any more and no FIN or RST
// is ever delivered, as when a node is lost.
func (n *Netns) Cut() error { return ipCmd("link", "set", n.hostIf, "down") }

// Heal brings the link back up.
func (n *Netns) Heal() error { return ipCmd("link", "set", n.hostIf, "up") }

// Close removes the link and the namespace.
func (n *Netns) Close() {
	_ = ipCmd("link", "del", n.hostIf)
	_ = ipCmd("netns", "del", n.Name)
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
