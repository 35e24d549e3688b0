package e2e_test

import (
	"fmt"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// replicatingFrom returns, for each epoch a worker's log shows streaming,
// the slot's confirmed position it started from.
func replicatingFrom(out string) map[uint64]pglogrepl.LSN {
	return logPositions(out, "msg=replicating ", fromLSNRe)
}

var durableRe = regexp.MustCompile(`(?m)^baton_worker_durable_lsn\{[^}]*\} (\S+)$`)

// durableLSN reads baton_worker_durable_lsn from a worker's /metrics.
func durableLSN(t *testing.T, w *harness.Worker) pglogrepl.LSN {
	t.Helper()
	m := durableRe.FindStringSubmatch(scrape(t, "http://"+w.HTTPAddr))
	if m == nil {
		return 0
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("baton_worker_durable_lsn %q: %v", m[1], err)
	}
	return pglogrepl.LSN(f)
}

// The final acknowledgement of a graceful stop lands (issue 8): over 15
// graceful stops under writes, alternately SIGTERM to the worker (then to
// its broker once it exited, as Kubernetes does) and to the broker alone,
// the slot's confirmed position equals the stopped worker's final
// acknowledgement (`replication stopped gracefully ... acked_lsn=X`) every
// time. The confirmed position is read by the successor as it starts
// streaming (`replicating ... from_lsn=Y`), the first moment anyone can
// rely on it, without racing the successor's own acknowledgements. The
// stopped container is restarted each time and becomes the standby.
func TestGracefulStopAckConfirmed(t *testing.T) {
	const stops = 15
	pg := pgtest.Start(t, pgtest.Options{})
	setupItems(t, pg)
	dir := t.TempDir() // shared: shapes survive every handoff
	pods := []*harness.Pod{newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dir}), newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: dir})}
	active := awaitActivePod(t, 30*time.Second, pods...)
	shapeItems(t, active.Worker())
	w := startWriter(t, pg)
	var acks []pglogrepl.LSN
	conn := connect(t, pg)
	for i := range stops {
		// The active worker stores rows written after it started, so
		// that its final acknowledgement is a new position.
		target := walLSN(t, conn)
		if err := harness.Await(30*time.Second, fmt.Sprintf("%s durable past %s", active.Worker().Name, target), func() (bool, error) {
			return durableLSN(t, active.Worker()) >= target, nil
		}); err != nil {
			t.Fatal(err)
		}
		stopped, brokerFirst := active.Worker(), i%2 == 1
		how := "SIGTERM to the worker, then its broker"
		if brokerFirst {
			how = "SIGTERM to the broker"
			if err := active.Broker().Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := active.Broker().AwaitExit(45 * time.Second); err != nil {
				t.Fatalf("stop %d: %v", i+1, err)
			}
			if err := active.StartBroker(t.Context()); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := active.Stop(false, 45*time.Second); err != nil {
				t.Fatalf("stop %d: %v", i+1, err)
			}
			if _, err := active.Restart(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		// The stopped worker's last graceful stop is this one.
		var epoch uint64
		var ack pglogrepl.LSN
		for e, lsn := range gracefulAcks(stopped.Output()) {
			if e >= epoch {
				epoch, ack = e, lsn
			}
		}
		if epoch == 0 {
			t.Fatalf("stop %d (%s): %s logged no graceful stop with its final acknowledgement", i+1, how, stopped.Name)
		}
		// Its successor: the first worker to stream with a newer epoch.
		var next *harness.Pod
		var nextEpoch uint64
		var from pglogrepl.LSN
		if err := harness.Await(45*time.Second, fmt.Sprintf("a worker streaming after epoch %d", epoch), func() (bool, error) {
			next, nextEpoch = nil, 0
			for _, p := range pods {
				for e, lsn := range replicatingFrom(p.Worker().Output()) {
					if e > epoch && (next == nil || e < nextEpoch) {
						next, nextEpoch, from = p, e, lsn
					}
				}
			}
			return next != nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		if from != ack {
			t.Errorf("stop %d (%s): %s (epoch %d) acknowledged %s at its graceful stop; the slot was confirmed at %s when epoch %d started streaming",
				i+1, how, stopped.Name, epoch, ack, from, nextEpoch)
		}
		acks = append(acks, ack)
		active = next
	}
	last := w.finish()
	if acks[len(acks)-1] <= acks[0] {
		t.Fatalf("final acknowledgements %v: the position did not move under writes", acks)
	}
	t.Logf("%d graceful stops, %d rows written; final acknowledgements %v", stops, last, acks)
}
