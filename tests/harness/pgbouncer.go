package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PgBouncer is a real PgBouncer process in front of a PostgreSQL server.
type PgBouncer struct {
	*Process
	Port int
	dir  string
}

// StartPgBouncer starts PgBouncer on a free port, pooling in mode
// (session or transaction) for the server at pgPort, with no
// authentication. ignore lists startup parameters it should accept and drop.
// Running as root, it runs as the postgres (or nobody) user.
func StartPgBouncer(pgPort int, mode string, ignore []string) (*PgBouncer, error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pgbouncer is missing; install it with: apt-get install -y pgbouncer")
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "baton-pgbouncer-")
	if err != nil {
		return nil, err
	}
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
ignore_startup_parameters = %s
logfile =
pidfile =
`, pgPort, port, filepath.Join(dir, "users.txt"), mode, strings.Join(ignore, ","))
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 {
		cred, err := unprivileged()
		if err != nil {
			return nil, err
		}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	}
	p, err := startCmd("pgbouncer", cmd, nil)
	if err != nil {
		return nil, err
	}
	b := &PgBouncer{Process: p, Port: port, dir: dir}
	if err := Await(10*time.Second, "pgbouncer to listen", func() (bool, error) {
		select {
		case <-p.Done():
			return false, fmt.Errorf("pgbouncer exited: %s", p.Output())
		default:
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	}); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// URL is a connection URL through the pooler.
func (b *PgBouncer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", b.Port)
}

// Close stops PgBouncer and removes its files.
func (b *PgBouncer) Close() {
	b.Kill()
	os.RemoveAll(b.dir)
}

func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("no unprivileged user (postgres or nobody) to run as")
}
