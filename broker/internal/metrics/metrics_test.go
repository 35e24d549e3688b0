package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/batonhq/baton/broker/internal/metrics"
)

// TestLint: the broker's metrics follow Prometheus's naming and unit
// conventions, and every series that rate() and dashboards need exists
// before its first event.
func TestLint(t *testing.T) {
	m := metrics.New("lint", "v1.2.3", hub{})
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	for _, c := range metrics.HandoffCauses {
		if got := testutil.ToFloat64(m.Handoffs.WithLabelValues(c)); got != 0 {
			t.Errorf("handoffs_total{cause=%q} = %v before any handoff", c, got)
		}
	}
	n, err := testutil.GatherAndCount(m.Registry, "baton_build_info", "baton_broker_handoffs_total")
	if err != nil || n != 1+len(metrics.HandoffCauses) {
		t.Errorf("baton_build_info and handoffs_total series: %d, %v; want %d", n, err, 1+len(metrics.HandoffCauses))
	}
	for _, mf := range mfs {
		if mf.GetName() != "baton_build_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["program"] != "broker" || labels["version"] != "v1.2.3" || !strings.HasPrefix(labels["goversion"], "go") || labels["revision"] == "" {
			t.Errorf("baton_build_info labels %v", labels)
		}
	}
}

type hub struct{}

func (hub) DurableLSN() uint64 { return 0 }
func (hub) Attached() int      { return 0 }
