package podrunner_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/podrunner"
)

func deployment(replicas int32, surge, unavailable intstr.IntOrString) *appsv1.Deployment {
	labels := map[string]string{"app": "fake"}
	tmpl := podTemplate(labels, nil, env("DUMP", "FAKE_SERVICE_HOST FAKE_SERVICE_PORT"))
	podName := corev1.EnvVar{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}
	for _, cs := range [][]corev1.Container{tmpl.Spec.InitContainers, tmpl.Spec.Containers} {
		for i := range cs {
			cs[i].Env = append([]corev1.EnvVar{podName}, cs[i].Env...)
			for j := range cs[i].Env {
				if cs[i].Env[j].Name == "NAME" {
					cs[i].Env[j].Value = "$(POD_NAME)/" + cs[i].Name
				}
			}
		}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "fake"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavailable},
			},
			Template: tmpl,
		},
	}
}

func service() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "fake"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "fake"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
}

// podCounts replays the cluster's events and returns, after each one, how
// many pods were not terminating and how many of those were Ready.
type podCounts struct {
	at             podrunner.Event
	active, ready  int
	terminatingNow int
}

func replay(events []podrunner.Event) []podCounts {
	type state struct{ ready, terminating, gone bool }
	pods := map[string]*state{}
	var out []podCounts
	for _, e := range events {
		if name, ok := strings.CutPrefix(e.Message, "created pod "); ok && e.Reason == "SuccessfulCreate" {
			pods[name] = &state{}
		}
		if s, ok := pods[e.Object]; ok {
			switch {
			case e.Reason == "Ready":
				s.ready = true
			case e.Reason == "NotReady":
				s.ready = false
			case e.Reason == "Killing" && strings.HasPrefix(e.Message, "deleted"):
				s.terminating = true
			case e.Reason == "Deleted":
				s.gone = true
			}
		}
		c := podCounts{at: e}
		for _, s := range pods {
			switch {
			case s.gone:
			case s.terminating:
				c.terminatingNow++
			default:
				c.active++
				if s.ready {
					c.ready++
				}
			}
		}
		out = append(out, c)
	}
	return out
}

// prober sends GET /hello through the Service on a new connection every
// few milliseconds until stopped.
type prober struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	errs []string
	from map[string]int // answers by pod
}

func startProber(url string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{}), from: map[string]int{}}
	client := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := client.Get(url + "/hello")
			p.mu.Lock()
			if err != nil {
				p.errs = append(p.errs, err.Error())
			} else {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					p.errs = append(p.errs, fmt.Sprintf("%d %s", resp.StatusCode, b))
				}
				p.from[string(b)]++
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *prober) finish() ([]string, map[string]int) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs, p.from
}

// A rolling update replaces every pod within maxSurge and maxUnavailable,
// counting only Ready pods as available; the Service sends every new
// connection to a Ready pod that is not terminating, so a client sees
// every request answered throughout.
func TestRollingUpdate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                string
		surge, unavailable  intstr.IntOrString
		maxActive, minReady int
	}{
		{"surge 1, unavailable 0", intstr.FromInt32(1), intstr.FromInt32(0), 3, 2},
		{"surge 0, unavailable 1", intstr.FromInt32(0), intstr.FromInt32(1), 2, 1},
		{"25% each (defaults, rounded)", intstr.FromString("25%"), intstr.FromString("25%"), 3, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			svc, err := c.ApplyService(service())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(svc.Close)
			d, err := c.ApplyDeployment(deployment(2, tc.surge, tc.unavailable))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(d.Delete)
			if err := d.AwaitRollout(30*time.Second, true); err != nil {
				t.Fatal(err)
			}
			first := d.Pods()
			pr := startProber(svc.URL("http"))
			from := len(c.Events())
			d.Update(func(s *corev1.PodTemplateSpec) {
				s.Spec.Containers[0].Env = append(s.Spec.Containers[0].Env, corev1.EnvVar{Name: "VERSION", Value: "2"})
			})
			if err := d.AwaitRollout(60*time.Second, true); err != nil {
				t.Fatal(err)
			}
			errs, answers := pr.finish()
			events := c.Events()
			for _, n := range replay(events)[from:] {
				if n.active > tc.maxActive || n.ready < tc.minReady {
					t.Errorf("after %s: %d pods not terminating (max %d), %d Ready (min %d)", n.at, n.active, tc.maxActive, n.ready, tc.minReady)
				}
			}
			now := d.Pods()
			if len(now) != 2 {
				t.Fatalf("%d pods after the rollout; want 2", len(now))
			}
			for _, p := range now {
				for _, old := range first {
					if p == old {
						t.Fatalf("pod %s of the old template is still there", p.Name())
					}
				}
				if !p.Ready() {
					t.Fatalf("pod %s not Ready after the rollout", p.Name())
				}
			}
			if len(errs) > 0 {
				t.Errorf("the Service's clients saw %d errors: %v", len(errs), errs)
			}
			if f := svc.Failures(); len(f) > 0 {
				t.Errorf("the Service reset or left unanswered: %v", f)
			}
			t.Logf("answers by pod: %v; statuses %v", answers, svc.Counts())
			if answers[first[0].Name()]+answers[first[1].Name()] == 0 || answers[now[0].Name()]+answers[now[1].Name()] == 0 {
				t.Errorf("answers by pod %v; want answers from old and new pods", answers)
			}
			// The Service's variables reached the pods.
			dump := readEvents(t, c.ClaimPath("shared")+"/events")
			want := "env FAKE_SERVICE_PORT=" + strings.Split(svc.Addr("http"), ":")[1]
			if e := mustFind(t, dump, first[0].Name()+"/worker", "env FAKE_SERVICE_PORT="); e.what != want {
				t.Errorf("%s; want %s", e.what, want)
			}
		})
	}
}

// The Service resets a connection when no pod is Ready, and records a
// request a pod left unanswered when it closed the connection.
func TestServiceFailures(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	svc, err := c.ApplyService(service())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	client := http.Client{Timeout: 10 * time.Second}
	if _, err := client.Get(svc.URL("http") + "/hello"); err == nil {
		t.Fatal("a request with no pod behind the Service got an answer")
	}
	if f := svc.Failures(); len(f) != 1 || !strings.Contains(f[0].Reason, "no Ready endpoint") {
		t.Fatalf("failures %v; want one reset for no endpoint", f)
	}

	p, err := c.RunPod("pod-e", deployment(1, intstr.FromInt32(1), intstr.FromInt32(0)).Spec.Template)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AwaitReady(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	hung := make(chan error, 1)
	go func() {
		_, err := client.Get(svc.URL("http") + "/hang")
		hung <- err
	}()
	if err := harness.Await(5*time.Second, "the request to reach the pod", func() (bool, error) {
		return svc.Outstanding() == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	p.Delete()
	if err := <-hung; err == nil {
		t.Fatal("the hung request got an answer")
	}
	<-p.Done()
	f := svc.Failures()
	if len(f) != 2 || f[1].Pod != "pod-e" || !strings.Contains(f[1].Reason, "unanswered") || f[1].URL != "/hang" {
		t.Fatalf("failures %v; want the /hang request unanswered by pod-e", f)
	}
}
