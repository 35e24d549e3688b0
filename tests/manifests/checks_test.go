package manifests

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"

	"github.com/batonhq/baton/tests/k8s"
)

// Names the manifests and the programs agree on.
const (
	brokerName     = "broker"
	workerName     = "worker"
	secretName     = "baton-database"
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	healthPath     = "/v1/health"
	hostnameKey    = "kubernetes.io/hostname"
	drainMargin    = 10 * time.Second // for the worker's flush and the broker's own exit
	minStartBudget = 10 * time.Second // the broker listens at once, but a loaded node is slow
)

// Settings is the broker's configuration as `broker config` prints it.
type Settings map[string]string

// Duration returns a duration setting.
func (s Settings) Duration(name string) (time.Duration, error) {
	d, err := time.ParseDuration(s[name])
	if err != nil {
		return 0, fmt.Errorf("broker setting %s: %w", name, err)
	}
	return d, nil
}

// BrokerConfig validates the environment a manifest gives the broker with the
// broker's own parser and returns the settings it would run with.
type BrokerConfig func(env map[string]string) (Settings, error)

func describe(obj runtime.Object) string {
	m, err := metaOf(obj)
	if err != nil {
		return fmt.Sprintf("%T", obj)
	}
	return fmt.Sprintf("%s %s", strings.TrimPrefix(fmt.Sprintf("%T", obj), "*v1."), m.GetName())
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no metadata", obj)
	}
	return m, nil
}

// checkPodSecurity evaluates every pod template against the latest
// `restricted` Pod Security Standard, as the admission plugin of a namespace
// labelled pod-security.kubernetes.io/enforce=restricted does.
func checkPodSecurity(objs *k8s.Objects) []error {
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		return []error{err}
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	var errs []error
	for _, d := range objs.Deployments {
		res := psapolicy.AggregateCheckResults(eval.EvaluatePod(lv, &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec))
		if !res.Allowed {
			errs = append(errs, fmt.Errorf("Deployment %s: refused at Pod Security level restricted: %s", d.Name, res.ForbiddenReason()+": "+res.ForbiddenDetail()))
		}
	}
	return errs
}

// checkNoSecrets: the database Secret is created by hand; applying one from
// here would overwrite the real one.
func checkNoSecrets(objs *k8s.Objects) []error {
	var errs []error
	for _, s := range objs.Secrets {
		errs = append(errs, fmt.Errorf("Secret %s is in the applied manifests: create it by hand (deploy/README.md)", s.Name))
	}
	return errs
}

// checkSelectors: every workload selector includes the stream's instance
// label; the Service, PDB and NetworkPolicy of a Deployment select its pods;
// no selector of one Deployment's objects selects another Deployment's pods.
func checkSelectors(objs *k8s.Objects) []error {
	var errs []error
	type selecting struct {
		what string
		sel  labels.Selector
	}
	var selectors []selecting
	for _, s := range objs.Services {
		selectors = append(selectors, selecting{"Service " + s.Name, labels.SelectorFromSet(s.Spec.Selector)})
		errs = append(errs, needInstance("Service "+s.Name, s.Spec.Selector)...)
	}
	for _, p := range objs.PodDisruptionBudgets {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			errs = append(errs, fmt.Errorf("PodDisruptionBudget %s: %w", p.Name, err))
			continue
		}
		selectors = append(selectors, selecting{"PodDisruptionBudget " + p.Name, sel})
		errs = append(errs, needInstance("PodDisruptionBudget "+p.Name, matchLabels(p.Spec.Selector))...)
	}
	for _, n := range objs.NetworkPolicies {
		sel, err := metav1.LabelSelectorAsSelector(&n.Spec.PodSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("NetworkPolicy %s: %w", n.Name, err))
			continue
		}
		selectors = append(selectors, selecting{"NetworkPolicy " + n.Name, sel})
		errs = append(errs, needInstance("NetworkPolicy "+n.Name, n.Spec.PodSelector.MatchLabels)...)
	}
	for _, d := range objs.Deployments {
		errs = append(errs, needInstance("Deployment "+d.Name+" selector", matchLabels(d.Spec.Selector))...)
		for _, o := range objs.Deployments {
			if o == d {
				continue
			}
			if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err == nil && sel.Matches(labels.Set(o.Spec.Template.Labels)) {
				errs = append(errs, fmt.Errorf("Deployment %s's selector also selects the pods of Deployment %s", d.Name, o.Name))
			}
		}
		pods := labels.Set(d.Spec.Template.Labels)
		for _, want := range []string{"Service", "PodDisruptionBudget", "NetworkPolicy"} {
			n := 0
			for _, s := range selectors {
				if strings.HasPrefix(s.what, want+" ") && s.sel.Matches(pods) {
					n++
				}
			}
			if n != 1 {
				errs = append(errs, fmt.Errorf("Deployment %s: %d %ss select its pods, want exactly one", d.Name, n, want))
			}
		}
	}
	return errs
}

func matchLabels(s *metav1.LabelSelector) map[string]string {
	if s == nil {
		return nil
	}
	return s.MatchLabels
}

func needInstance(what string, sel map[string]string) []error {
	if sel[labelName] == "" || sel[labelInstance] == "" {
		return []error{fmt.Errorf("%s: selector %v lacks %s and %s (the stream): streams side by side would share it", what, sel, labelName, labelInstance)}
	}
	return nil
}

// checkNetworkPolicy: the lease port admits nobody but pods of the same
// stream, the metrics port only selected namespaces, the HTTP port anyone.
func checkNetworkPolicy(objs *k8s.Objects) []error {
	var errs []error
	for _, d := range objs.Deployments {
		np := policyFor(objs, d)
		if np == nil {
			continue // reported by checkSelectors
		}
		what := "NetworkPolicy " + np.Name
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			errs = append(errs, fmt.Errorf("%s: policyTypes lacks Ingress", what))
		}
		broker, worker := k8s.Container(&d.Spec.Template.Spec, brokerName), k8s.Container(&d.Spec.Template.Spec, workerName)
		if broker == nil || worker == nil {
			continue // reported by checkDeployment
		}
		lease, errL := containerPort(broker, "grpc")
		metricsPort, errM := containerPort(broker, "metrics")
		httpPort, errH := containerPort(worker, "http")
		if err := firstErr(errL, errM, errH); err != nil {
			errs = append(errs, fmt.Errorf("Deployment %s: %w", d.Name, err))
			continue
		}
		for i, rule := range np.Spec.Ingress {
			for _, port := range []int32{lease, metricsPort} {
				if !admitsPort(rule, port, d) {
					continue
				}
				if len(rule.From) == 0 {
					errs = append(errs, fmt.Errorf("%s: ingress rule %d admits port %d from anywhere", what, i, port))
				}
				for _, peer := range rule.From {
					if port == lease && !sameStream(peer, d) {
						errs = append(errs, fmt.Errorf("%s: ingress rule %d admits the lease port %d from peers other than the stream's own pods", what, i, port))
					}
					if port == metricsPort && peer.NamespaceSelector == nil && !sameStream(peer, d) {
						errs = append(errs, fmt.Errorf("%s: ingress rule %d admits the metrics port %d from other than selected namespaces", what, i, port))
					}
				}
			}
		}
		open := false
		for _, rule := range np.Spec.Ingress {
			open = open || (len(rule.From) == 0 && admitsPort(rule, httpPort, d))
		}
		if !open {
			errs = append(errs, fmt.Errorf("%s: the shape API port %d is not open to clients", what, httpPort))
		}
	}
	return errs
}

func policyFor(objs *k8s.Objects, d *appsv1.Deployment) *networkingv1.NetworkPolicy {
	for _, np := range objs.NetworkPolicies {
		if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			return np
		}
	}
	return nil
}

// admitsPort reports whether an ingress rule covers port (no ports: all).
func admitsPort(rule networkingv1.NetworkPolicyIngressRule, port int32, d *appsv1.Deployment) bool {
	if len(rule.Ports) == 0 {
		return true
	}
	for _, p := range rule.Ports {
		if p.Port == nil {
			return true
		}
		n := p.Port.IntVal
		if p.Port.Type == intstr.String {
			n = namedPort(d, p.Port.StrVal)
		}
		end := n
		if p.EndPort != nil {
			end = *p.EndPort
		}
		if n <= port && port <= end {
			return true
		}
	}
	return false
}

func namedPort(d *appsv1.Deployment, name string) int32 {
	for _, cs := range [][]corev1.Container{d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.Name == name {
					return p.ContainerPort
				}
			}
		}
	}
	return -1
}

// sameStream: a peer that only selects pods of d's stream in the policy's own
// namespace.
func sameStream(peer networkingv1.NetworkPolicyPeer, d *appsv1.Deployment) bool {
	if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil {
		return false
	}
	return peer.PodSelector.MatchLabels[labelInstance] == d.Spec.Template.Labels[labelInstance] &&
		peer.PodSelector.MatchLabels[labelName] == d.Spec.Template.Labels[labelName]
}

func containerPort(c *corev1.Container, name string) (int32, error) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("container %s declares no port %q", c.Name, name)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// envOf returns a container's plain env values (valueFrom entries map to "").
func envOf(c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

// portOf returns the port of a listen address such as ":7070".
func portOf(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(p)
	return int32(n), err
}

// probePort resolves a probe's port (a number or a container port's name).
func probePort(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.String {
		port, err := containerPort(c, p.StrVal)
		if err != nil {
			return -1
		}
		return port
	}
	return p.IntVal
}

// window is how long a probe takes to conclude failure.
func window(p *corev1.Probe) time.Duration {
	period, threshold := p.PeriodSeconds, p.FailureThreshold
	if period == 0 {
		period = 10
	}
	if threshold == 0 {
		threshold = 3
	}
	return time.Duration(period*threshold) * time.Second
}

func seconds(n int32) time.Duration { return time.Duration(n) * time.Second }

func hasURLPort(raw string, port int32) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Port() == strconv.Itoa(int(port))
}
