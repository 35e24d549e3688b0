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

// results are the handoff section's measurements.
type results struct {
	cfg config

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

func describeMachine(ctx context.Context, dbURL string) machine {
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
	if conn, err := pgx.Connect(qctx, dbURL); err == nil {
		_ = conn.QueryRow(qctx, "SHOW server_version").Scan(&m.pgVersion)
		_ = conn.Close(qctx)
	}
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
	cells := [][]string{{"measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "p50 / baseline p50"}}
	for _, x := range rows {
		cells = append(cells, []string{x.name, fmt.Sprint(x.st.n), ms(x.st.p50), ms(x.st.p95), ms(x.st.p99), ms(x.st.max),
			fmt.Sprintf("%.1f×", float64(x.st.p50)/float64(base))})
	}
	return renderTable(cells, md)
}

// renderTable renders cells (the first row is the head) as a markdown
// table or as aligned text; columns after the first are right-aligned.
func renderTable(cells [][]string, md bool) string {
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
	width := make([]int, len(cells[0]))
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
	b.WriteString("\n== Lease handoff ==\n\n")
	b.WriteString(r.table(false))
	b.WriteString("\n" + r.targetLine() + "\n\n")
	for _, d := range r.details() {
		b.WriteString(d + "\n")
	}
	fmt.Fprintf(&b, "(%d graceful handoffs, %d crash takeovers, %d baseline handoffs, each after %d unmeasured warm-up rounds)\n",
		r.cfg.rounds, r.cfg.crashRounds, r.cfg.baselineRounds, r.cfg.warmup)
	return b.String()
}

func (r *results) markdown() string {
	var b strings.Builder
	b.WriteString("## Lease handoff\n\n")
	fmt.Fprintf(&b, "%d graceful handoffs, %d crash takeovers, %d baseline handoffs, each after %d unmeasured warm-up rounds; "+
		"broker with default settings (lease TTL 6s, heartbeat 2s, lock session timeout 10s); every process on loopback.\n\n",
		r.cfg.rounds, r.cfg.crashRounds, r.cfg.baselineRounds, r.cfg.warmup)
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

A graceful handoff commits three writes to ` + "`baton.streams`" + ` on its critical path (the old
broker's release record, the new broker's epoch claim and its grant record), a
crash takeover two; on a real server each waits for a WAL flush (and for
synchronous standbys, if any); with ` + "`fsync=off`" + ` they do not. Run with
` + "`-pg-setting fsync=on`" + ` to include that.

With 50 rounds the p99 (nearest rank) is the largest sample, so one scheduling
hiccup decides the target line.
`)
	return b.String()
}
