package e2e_test

import (
	"strings"
	"testing"

	"github.com/batonhq/baton/tests/harness"
)

// Every invalid setting: exit code 2 and one line naming the setting.
func TestInvalidSettingsExit2(t *testing.T) {
	const url = "postgres://postgres@127.0.0.1:1/postgres"
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		setting string
	}{
		{"missing url", map[string]string{}, nil, "DATABASE_URL"},
		{"bad url scheme", map[string]string{"DATABASE_URL": "mysql://x@y/z"}, nil, "DATABASE_URL"},
		{"unparsable url", map[string]string{"DATABASE_URL": "postgres://x@[::1/z"}, nil, "DATABASE_URL"},
		{"not a url", map[string]string{"DATABASE_URL": "hello"}, nil, "DATABASE_URL"},
		{"stream upper case", map[string]string{"DATABASE_URL": url, "REPLICATION_STREAM_ID": "Orders"}, nil, "REPLICATION_STREAM_ID"},
		{"stream too long", map[string]string{"DATABASE_URL": url, "REPLICATION_STREAM_ID": strings.Repeat("a", 41)}, nil, "REPLICATION_STREAM_ID"},
		{"stream dash", map[string]string{"DATABASE_URL": url, "REPLICATION_STREAM_ID": "a-b"}, nil, "REPLICATION_STREAM_ID"},
		{"listen no port", map[string]string{"DATABASE_URL": url, "BATON_BROKER_LISTEN": "localhost"}, nil, "BATON_BROKER_LISTEN"},
		{"listen bad port", map[string]string{"DATABASE_URL": url, "BATON_BROKER_LISTEN": ":99999x"}, nil, "BATON_BROKER_LISTEN"},
		{"metrics listen", map[string]string{"DATABASE_URL": url, "BATON_METRICS_LISTEN": "nope"}, nil, "BATON_METRICS_LISTEN"},
		{"session timeout unparsable", map[string]string{"DATABASE_URL": url, "BATON_LOCK_SESSION_TIMEOUT": "ten"}, nil, "BATON_LOCK_SESSION_TIMEOUT"},
		{"session timeout zero", map[string]string{"DATABASE_URL": url, "BATON_LOCK_SESSION_TIMEOUT": "0s"}, nil, "BATON_LOCK_SESSION_TIMEOUT"},
		{"heartbeat negative", map[string]string{"DATABASE_URL": url, "BATON_HEARTBEAT_INTERVAL": "-1s"}, nil, "BATON_HEARTBEAT_INTERVAL"},
		{"heartbeat above session", map[string]string{"DATABASE_URL": url, "BATON_HEARTBEAT_INTERVAL": "11s"}, nil, "BATON_HEARTBEAT_INTERVAL"},
		{"ttl too long", map[string]string{"DATABASE_URL": url, "BATON_LEASE_TTL": "8s"}, nil, "BATON_LEASE_TTL"},
		{"ttl zero", map[string]string{"DATABASE_URL": url, "BATON_LEASE_TTL": "0s"}, nil, "BATON_LEASE_TTL"},
		{"absence zero", map[string]string{"DATABASE_URL": url, "BATON_WORKER_ABSENCE_TIMEOUT": "0s"}, nil, "BATON_WORKER_ABSENCE_TIMEOUT"},
		{"drain unparsable", map[string]string{"DATABASE_URL": url, "BATON_DRAIN_TIMEOUT": "soon"}, nil, "BATON_DRAIN_TIMEOUT"},
		{"log format", map[string]string{"DATABASE_URL": url, "BATON_LOG_FORMAT": "xml"}, nil, "BATON_LOG_FORMAT"},
		{"flag overrides env", map[string]string{"DATABASE_URL": url}, []string{"--baton-lease-ttl", "9s"}, "BATON_LEASE_TTL"},
		{"unknown flag", map[string]string{"DATABASE_URL": url}, []string{"--nope"}, "flags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			for k, v := range tt.env {
				env = append(env, k+"="+v)
			}
			// Clear what the test process's environment might set.
			for _, k := range []string{"DATABASE_URL", "REPLICATION_STREAM_ID", "BATON_BROKER_LISTEN", "BATON_METRICS_LISTEN",
				"BATON_LOCK_SESSION_TIMEOUT", "BATON_HEARTBEAT_INTERVAL", "BATON_LEASE_TTL",
				"BATON_WORKER_ABSENCE_TIMEOUT", "BATON_DRAIN_TIMEOUT", "BATON_LOG_FORMAT"} {
				if _, ok := tt.env[k]; !ok {
					env = append(env, k+"=")
				}
			}
			p, err := harness.StartProcess("broker", append([]string{bins["broker"]}, tt.args...), env, nil)
			if err != nil {
				t.Fatal(err)
			}
			code, err := p.Wait(10 * 1e9)
			if err != nil {
				p.Kill()
				t.Fatal(err)
			}
			out := strings.TrimSpace(p.Output())
			if code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
			}
			if strings.Count(out, "\n") != 0 || !strings.Contains(out, tt.setting) {
				t.Fatalf("output %q is not one line naming %s", out, tt.setting)
			}
		})
	}
}

// The worker too: every invalid setting exits 2 with one line naming it.
func TestWorkerInvalidSettingsExit2(t *testing.T) {
	const url = "postgres://postgres@127.0.0.1:1/postgres"
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		setting string
	}{
		{"missing url", map[string]string{}, nil, "DATABASE_URL"},
		{"bad url", map[string]string{"DATABASE_URL": "http://x"}, nil, "DATABASE_URL"},
		{"stream", map[string]string{"DATABASE_URL": url, "REPLICATION_STREAM_ID": "no way"}, nil, "REPLICATION_STREAM_ID"},
		{"broker addr without port", map[string]string{"DATABASE_URL": url, "BATON_BROKER_ADDR": "localhost"}, nil, "BATON_BROKER_ADDR"},
		{"broker addr without host", map[string]string{"DATABASE_URL": url, "BATON_BROKER_ADDR": ":7070"}, nil, "BATON_BROKER_ADDR"},
		{"http listen", map[string]string{"DATABASE_URL": url, "BATON_HTTP_LISTEN": "3000"}, nil, "BATON_HTTP_LISTEN"},
		{"log format", map[string]string{"DATABASE_URL": url, "BATON_LOG_FORMAT": "yaml"}, nil, "BATON_LOG_FORMAT"},
		{"shape idle timeout", map[string]string{"DATABASE_URL": url, "BATON_SHAPE_IDLE_TIMEOUT": "a day"}, nil, "BATON_SHAPE_IDLE_TIMEOUT"},
		{"negative shape idle timeout", map[string]string{"DATABASE_URL": url, "BATON_SHAPE_IDLE_TIMEOUT": "-1h"}, nil, "BATON_SHAPE_IDLE_TIMEOUT"},
		{"shape idle timeout flag", map[string]string{"DATABASE_URL": url}, []string{"--baton-shape-idle-timeout", "soon"}, "BATON_SHAPE_IDLE_TIMEOUT"},
		{"shape idle timeout flag alias", map[string]string{"DATABASE_URL": url}, []string{"--shape-idle-timeout", "-5m"}, "BATON_SHAPE_IDLE_TIMEOUT"},
		{"flag", map[string]string{"DATABASE_URL": url}, []string{"--baton-http-listen", "nope"}, "BATON_HTTP_LISTEN"},
		{"advertise url without scheme", map[string]string{"DATABASE_URL": url, "BATON_ADVERTISE_URL": "10.1.2.3:3000"}, nil, "BATON_ADVERTISE_URL"},
		{"advertise url not expanded", map[string]string{"DATABASE_URL": url, "BATON_ADVERTISE_URL": "http://$(POD_IP):3000"}, nil, "BATON_ADVERTISE_URL"},
		{"advertise url without host", map[string]string{"DATABASE_URL": url, "BATON_ADVERTISE_URL": "http://:3000"}, nil, "BATON_ADVERTISE_URL"},
		{"advertise url flag", map[string]string{"DATABASE_URL": url}, []string{"--baton-advertise-url", "ftp://10.1.2.3"}, "BATON_ADVERTISE_URL"},
		{"neither secret nor insecure", map[string]string{"DATABASE_URL": url}, nil, "BATON_SECRET"},
		{"insecure false", map[string]string{"DATABASE_URL": url, "BATON_INSECURE": "false"}, nil, "BATON_SECRET"},
		{"secret and insecure", map[string]string{"DATABASE_URL": url, "BATON_SECRET": "s", "BATON_INSECURE": "true"}, nil, "BATON_INSECURE"},
		{"insecure not a boolean", map[string]string{"DATABASE_URL": url, "BATON_INSECURE": "yes"}, nil, "BATON_INSECURE"},
		{"insecure flag", map[string]string{"DATABASE_URL": url, "BATON_SECRET": "s"}, []string{"--baton-insecure"}, "BATON_INSECURE"},
		{"allow shape deletion", map[string]string{"DATABASE_URL": url, "BATON_SECRET": "s", "BATON_ALLOW_SHAPE_DELETION": "sure"}, nil, "BATON_ALLOW_SHAPE_DELETION"},
		{"chunk threshold", map[string]string{"DATABASE_URL": url, "BATON_SECRET": "s", "BATON_SHAPE_CHUNK_BYTES_THRESHOLD": "10MB"}, nil, "BATON_SHAPE_CHUNK_BYTES_THRESHOLD"},
		{"zero chunk threshold", map[string]string{"DATABASE_URL": url, "BATON_SECRET": "s", "BATON_SHAPE_CHUNK_BYTES_THRESHOLD": "0"}, nil, "BATON_SHAPE_CHUNK_BYTES_THRESHOLD"},
		{"cache max age", map[string]string{"DATABASE_URL": url, "BATON_SECRET": "s", "BATON_CACHE_MAX_AGE": "60"}, nil, "BATON_CACHE_MAX_AGE"},
		{"cache max age fraction", map[string]string{"DATABASE_URL": url, "BATON_SECRET": "s", "BATON_CACHE_MAX_AGE": "1.5s"}, nil, "BATON_CACHE_MAX_AGE"},
		{"negative cache stale age", map[string]string{"DATABASE_URL": url, "BATON_SECRET": "s"}, []string{"--baton-cache-stale-age=-1s"}, "BATON_CACHE_STALE_AGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := []string{"DATABASE_URL=", "REPLICATION_STREAM_ID=", "BATON_BROKER_ADDR=", "BATON_HTTP_LISTEN=",
				"BATON_STORAGE_DIR=", "BATON_LOG_FORMAT=", "BATON_SHAPE_IDLE_TIMEOUT=", "BATON_ADVERTISE_URL=",
				"BATON_SECRET=", "BATON_INSECURE=", "BATON_ALLOW_SHAPE_DELETION=", "BATON_SHAPE_CHUNK_BYTES_THRESHOLD=",
				"BATON_CACHE_MAX_AGE=", "BATON_CACHE_STALE_AGE="}
			for k, v := range tt.env {
				env = append(env, k+"="+v)
			}
			p, err := harness.StartProcess("worker", append([]string{bins["worker"]}, tt.args...), env, nil)
			if err != nil {
				t.Fatal(err)
			}
			code, err := p.Wait(10 * 1e9)
			if err != nil {
				p.Kill()
				t.Fatal(err)
			}
			out := strings.TrimSpace(p.Output())
			if code != 2 || strings.Count(out, "\n") != 0 || !strings.Contains(out, tt.setting) {
				t.Fatalf("exit %d, output %q; want exit 2 and one line naming %s", code, out, tt.setting)
			}
		})
	}
}
