package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// targetP99 is DESIGN §6's goal for a graceful handoff on loopback.
const targetP99 = 50 * time.Millisecond

type results struct {
	cfg     config
	machine machine
	elapsed time.Duration

	baseline        []time.Duration
	releaseToGrant  []time.Duration
	sigtermToGrant  []time.Duration
	sigtermToRevoke []time.Duration
	standbyStart    []time.Duration
	killToGrant     []time.Duration
}

type machine struct {
	cores     int
	model     string
	goVersion string
	pgVersion string
	kernel    string
	date      time.Time
}

func describeMachine(ctx context.Context, conn *pgx.Conn) machine {
	m := machine{cores: runtime.NumCPU(), model: "unknown", goVersion: runtime.Version(), pgVersion: "unknown", kernel: "unknown", date: time.Now().UTC()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(b))
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = conn.QueryRow(qctx, "SHOW server_version").Scan(&m.pgVersion)
	return m
}

// stats are nearest-rank percentiles.
type stats struct {
	n                  int
	p50, p95, p99, max time.Duration
}

func summarize(ds []time.Duration) stats {
	s := slices.Clone(ds)
	slices.Sort(s)
	pct := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return stats{n: len(s), p50: pct(0.50), p95: pct(0.95), p99: pct(0.99), max: s[len(s)-1]}
}

type row struct {
	name string
	st   stats
}

func (r *results) rows() []row {
	return []row{
		{"baseline: PostgreSQL advisory lock handoff (unlock → waiter's lock returns)", summarize(r.baseline)},
		{"(a) graceful: old worker's Release sent → new worker's Granted", summarize(r.releaseToGrant)},
		{"(b) graceful: SIGTERM sent → new worker's Granted", summarize(r.sigtermToGrant)},
		{"crash: SIGKILL of the leader's broker → standby worker's Granted", summarize(r.killToGrant)},
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func (r *results) targetLine() string {
	p99 := summarize(r.releaseToGrant).p99
	verdict := "met"
	if p99 >= targetP99 {
		verdict = "not met"
	}
	return fmt.Sprintf("target: p99 of (a) < %d ms on loopback: %s (p99 %s ms)", targetP99.Milliseconds(), verdict, ms(p99))
}

func (r *results) table(md bool) string {
	rows := r.rows()
	base := rows[0].st.p50
	head := []string{"measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "p50 / baseline p50"}
	cells := [][]string{head}
	for _, x := range rows {
		cells = append(cells, []string{x.name, fmt.Sprint(x.st.n), ms(x.st.p50), ms(x.st.p95), ms(x.st.p99), ms(x.st.max),
			fmt.Sprintf("%.1f×", float64(x.st.p50)/float64(base))})
	}
	var b strings.Builder
	if md {
		for i, c := range cells {
			b.WriteString("| " + strings.Join(c, " | ") + " |\n")
			if i == 0 {
				b.WriteString("| --- |" + strings.Repeat(" ---: |", len(c)-1) + "\n")
			}
		}
		return b.String()
	}
	width := make([]int, len(head))
	for _, c := range cells {
		for i, s := range c {
			width[i] = max(width[i], len([]rune(s)))
		}
	}
	for _, c := range cells {
		for i, s := range c {
			pad := strings.Repeat(" ", width[i]-len([]rune(s)))
			if i == 0 {
				b.WriteString(s + pad)
			} else {
				b.WriteString("  " + pad + s)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// details are the breakdown lines printed under the table.
func (r *results) details() []string {
	rev := summarize(r.sigtermToRevoke)
	sb := summarize(r.standbyStart)
	return []string{
		fmt.Sprintf("graceful, SIGTERM sent → old worker sees revoked (shutdown): p50 %s ms, p99 %s ms", ms(rev.p50), ms(rev.p99)),
		fmt.Sprintf("new standby, broker process started → waiting in pg_advisory_lock with its worker attached (polled every %s): p50 %s ms, p99 %s ms",
			pollInterval, ms(sb.p50), ms(sb.p99)),
	}
}

func (r *results) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nBaton handoff benchmark — %d cores, %s, %s, PostgreSQL %s\n\n", r.machine.cores, r.machine.model, r.machine.goVersion, r.machine.pgVersion)
	b.WriteString(r.table(false))
	b.WriteString("\n" + r.targetLine() + "\n\n")
	for _, d := range r.details() {
		b.WriteString(d + "\n")
	}
	fmt.Fprintf(&b, "(%d warm-up rounds per measurement not counted; run took %s)\n", r.cfg.warmup, r.elapsed.Round(100*time.Millisecond))
	return b.String()
}

func (r *results) markdown() string {
	m := r.machine
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `go run ./tests/cmd/bench -bin bin -write BENCHMARKS.md`; `make bench` runs the same measurements and only prints them.\n\n")
	b.WriteString("- command: `make bench`\n")
	fmt.Fprintf(&b, "- date: %s\n", m.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- machine: %d cores (`nproc`), %s, %s\n", m.cores, m.model, m.kernel)
	fmt.Fprintf(&b, "- Go: %s; PostgreSQL: %s (throwaway cluster on 127.0.0.1, started by the benchmark)\n", m.goVersion, m.pgVersion)
	pgConf := "pgtest's defaults (`fsync=off`)"
	if len(r.cfg.pgSettings) > 0 {
		var kv []string
		for k, v := range r.cfg.pgSettings {
			kv = append(kv, "`"+k+"="+v+"`")
		}
		slices.Sort(kv)
		pgConf = "pgtest's defaults (`fsync=off`) overridden by " + strings.Join(kv, ", ")
	}
	fmt.Fprintf(&b, "- PostgreSQL settings: %s\n", pgConf)
	fmt.Fprintf(&b, "- broker: default settings (lease TTL 6s, heartbeat 2s, lock session timeout 10s); every process on loopback\n")
	fmt.Fprintf(&b, "- rounds: %d graceful handoffs, %d crash takeovers, %d baseline handoffs, each after %d unmeasured warm-up rounds; run took %s\n\n",
		r.cfg.rounds, r.cfg.crashRounds, r.cfg.baselineRounds, r.cfg.warmup, r.elapsed.Round(time.Second))
	b.WriteString("## Lease handoff\n\n")
	b.WriteString(r.table(true))
	b.WriteString("\n**" + r.targetLine() + "**\n\n")
	for _, d := range r.details() {
		b.WriteString("- " + d + "\n")
	}
	b.WriteString(`
What is measured:

- **baseline** — the floor of a lock handoff in PostgreSQL itself: two plain
  sessions (simple protocol, like the broker's lock session), one holding
  ` + "`pg_advisory_lock(1, 1)`" + `, the other blocked in it; from calling
  ` + "`pg_advisory_unlock`" + ` on the first to the second's lock call returning.
  Its rounds are interleaved with the graceful rounds, so both see the same load.
- **(a)** and **(b)** — a rolling deploy: two brokers on one stream, each with
  an attached Go lease client (` + "`worker/lease`" + `). The leader's broker gets
  SIGTERM; its worker sees revoked (shutdown) and releases at once; the
  standby's broker gets the lock, bumps the epoch and grants. (a) starts right
  before the old worker calls Release, (b) when SIGTERM is sent; both end when
  the new worker's Granted arrives. Then a fresh broker and worker start as the
  next standby; the next round starts once it reports readiness SERVING, has
  logged that it waits for the lock, is seen blocked in pg_locks, and its
  worker was told standby.
- **crash** — SIGKILL of the leader's broker: the kernel closes its lock
  session's socket, PostgreSQL ends the session and the standby's lock wait
  returns.

The throwaway cluster runs with ` + "`fsync=off`" + ` unless told otherwise. A graceful
handoff commits three writes to ` + "`baton.streams`" + ` on its critical path (the old
broker's release record, the new broker's epoch claim and its grant record), a
crash takeover two; on a real server each waits for a WAL flush (and for
synchronous standbys, if any). Run with ` + "`-pg-setting fsync=on`" + ` to include that.

The machine is shared and noisy (other jobs run on it at the same time), so
tails (p99, max) move from run to run: read the medians and the ratios to the
baseline measured in the same run, not the absolute tails. With 50 rounds the
p99 (nearest rank) is the largest sample, so one scheduling hiccup decides the
target line.
`)
	return b.String()
}
