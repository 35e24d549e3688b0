package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Nginx is a real nginx (Debian's package) caching the shape API of one
// worker, or of the pods of a stream, as a CDN or a reverse proxy in front
// of Electric does. Its locations, both proxying to the worker's root and
// caching by the responses' Cache-Control, with conditional revalidation
// (etag):
//
//	/bg/  stale-while-revalidate: an expired response still within its
//	      stale-while-revalidate age is served (STALE) while a background
//	      request revalidates it
//	/fg/  an expired response is revalidated before it is served
//	      (REVALIDATED when the worker answers 304)
//
// Every response carries X-Cache-Status: nginx's $upstream_cache_status
// (MISS, HIT, STALE, UPDATING, REVALIDATED, EXPIRED, ...). With several
// upstreams, a request goes to the next one when one refuses the
// connection or answers 502 or 503.
type Nginx struct {
	*Process
	Port int
	dir  string
}

// StartNginx starts nginx on a free port in front of the worker at
// upstream (host:port), or of the workers at upstream and more, taken in
// turn. Running as root, it runs as the postgres (or nobody) user.
func StartNginx(upstream string, more ...string) (*Nginx, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/bin/nginx"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("nginx is missing; install it with: apt-get install -y nginx")
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "baton-nginx-")
	if err != nil {
		return nil, err
	}
	var servers strings.Builder
	for _, u := range append([]string{upstream}, more...) {
		fmt.Fprintf(&servers, "server %s max_fails=0; ", u)
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
http {
  log_format cache '$request_uri $status $upstream_cache_status';
  access_log %[1]s/access.log cache;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  proxy_cache_path %[1]s/cache levels=1:2 keys_zone=baton:4m max_size=256m inactive=10m use_temp_path=off;
  upstream worker { %[2]s keepalive 8; }
  server {
    listen 127.0.0.1:%[3]d;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_read_timeout 120s;
    proxy_cache baton;
    proxy_cache_revalidate on;
    proxy_cache_lock on;
    proxy_next_upstream error timeout http_502 http_503;
    add_header X-Cache-Status $upstream_cache_status always;
    location /bg/ {
      proxy_pass http://worker/;
      proxy_cache_background_update on;
      proxy_cache_use_stale updating error timeout;
    }
    location /fg/ {
      proxy_pass http://worker/;
    }
  }
}
`, dir, servers.String(), port)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-e", "stderr", "-c", filepath.Join(dir, "nginx.conf"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		cred, err := unprivileged()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		cmd.SysProcAttr.Credential = cred
	}
	p, err := startCmd("nginx", cmd, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	n := &Nginx{Process: p, Port: port, dir: dir}
	if err := Await(10*time.Second, "nginx to listen", func() (bool, error) {
		select {
		case <-p.Done():
			return false, fmt.Errorf("nginx exited: %s", p.Output())
		default:
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	}); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// URL is the base URL of location loc ("bg" or "fg"): the worker's base
// URL through the cache.
func (n *Nginx) URL(loc string) string {
	return "http://127.0.0.1:" + strconv.Itoa(n.Port) + "/" + loc
}

// CacheStatuses counts the responses nginx gave so far by their cache
// status ($upstream_cache_status; "-" when the response was not cached).
func (n *Nginx) CacheStatuses() (map[string]int, error) {
	b, err := os.ReadFile(filepath.Join(n.dir, "access.log"))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			out[f[2]]++
		}
	}
	return out, nil
}

// Close stops nginx (its master and worker processes) and removes its
// files.
func (n *Nginx) Close() {
	n.Kill()
	os.RemoveAll(n.dir)
}
