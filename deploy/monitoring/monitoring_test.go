package monitoring_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// documented returns the metrics of the README's table of metrics.
func documented(t *testing.T) map[string]bool {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(baton_[a-z_]+)` \\| (gauge|counter|histogram) \\|").FindAllStringSubmatch(string(readme), -1) {
		names[m[1]] = m[2] == "histogram"
	}
	if len(names) < 30 {
		t.Fatalf("the README's table of metrics lists %d metrics", len(names))
	}
	return names
}

// metrics returns the metric names expr selects; it fails the test when
// expr does not parse.
func metrics(t *testing.T, where, expr string) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// checkNames fails the test for a metric that is not a documented baton_
// metric (a histogram's _bucket, _sum and _count series included).
func checkNames(t *testing.T, where string, names []string, doc map[string]bool) {
	t.Helper()
	if len(names) == 0 {
		t.Errorf("%s selects no metric", where)
	}
	for _, n := range names {
		base := n
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, s); ok && doc[b] {
				base = b
			}
		}
		if _, ok := doc[base]; !ok {
			t.Errorf("%s names %s, which the README's table of metrics does not list", where, n)
		}
	}
}

// TestAlertRules: alerts.yaml is a valid rule file for Prometheus (as
// promtool check rules validates it), every alert has a severity, a summary
// and a description, aggregates by stream, and names only documented
// metrics.
func TestAlertRules(t *testing.T) {
	groups, errs := rulefmt.ParseFile("alerts.yaml", false, model.UTF8Validation, parser.NewParser(parser.Options{}),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		return
	}
	doc := documented(t)
	var alerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			where := "alert " + r.Alert
			if r.Alert == "" {
				t.Errorf("rule %q of group %s is not an alert", r.Record, g.Name)
				continue
			}
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", where, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: no summary or description", where)
			}
			if !strings.Contains(r.Expr, "by (stream") {
				t.Errorf("%s: %q does not aggregate by stream", where, r.Expr)
			}
			checkNames(t, where, metrics(t, where, r.Expr), doc)
		}
	}
	// What the issue asked an on-call engineer to be woken for.
	for _, want := range []string{"BatonStreamNotHeld", "BatonReplicationLagging", "BatonRetainedWALGrowing", "BatonHandoffsFlapping", "BatonSlotLost"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}
}

// dashboard is what the test reads of dashboard.json.
type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// grafanaVars are the dashboard's variables, replaced for parsing.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$stream", "default")

// TestDashboard: dashboard.json is a Grafana dashboard whose every query
// (panels, annotations, the stream variable) parses as PromQL and names
// only documented metrics, with panels that fit the grid and do not
// overlap.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Fatalf("dashboard without title or uid")
	}
	doc := documented(t)
	check := func(where, expr string) {
		checkNames(t, where, metrics(t, where, grafanaVars.Replace(expr)), doc)
	}
	var stream bool
	for _, v := range d.Templating.List {
		if v.Name == "stream" {
			stream = true
			q, _ := v.Query.(map[string]any)
			s, _ := q["query"].(string)
			inner, ok := strings.CutPrefix(s, "label_values(")
			inner, _, _ = strings.Cut(inner, ",")
			if !ok {
				t.Errorf("variable stream: query %q is not label_values(...)", s)
				continue
			}
			check("variable stream", inner)
		}
	}
	if !stream {
		t.Error("no variable stream")
	}
	for _, a := range d.Annotations.List {
		check("annotation "+a.Name, a.Expr)
	}
	ids := map[int]bool{}
	occupied := map[[2]int]string{}
	n := 0
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := "panel " + p.Title
			if ids[p.ID] {
				t.Errorf("%s: id %d used twice", where, p.ID)
			}
			ids[p.ID] = true
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: grid position %+v outside the 24 columns", where, g)
			}
			for x := g.X; x < g.X+g.W; x++ {
				for y := g.Y; y < g.Y+g.H; y++ {
					if o, ok := occupied[[2]int{x, y}]; ok {
						t.Errorf("%s overlaps %s at %d,%d", where, o, x, y)
					}
					occupied[[2]int{x, y}] = p.Title
				}
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s has no query", where)
			}
			for _, tg := range p.Targets {
				check(where, tg.Expr)
				n++
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if n < 20 {
		t.Errorf("%d queries", n)
	}
}
