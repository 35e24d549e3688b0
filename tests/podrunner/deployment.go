package podrunner

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
)

// Deployment is a Deployment controller and its ReplicaSet controller, as
// kube-controller-manager runs them: each pod template gets a ReplicaSet
// (named by the template's hash); a RollingUpdate replaces pods within
// maxSurge and maxUnavailable, counting a pod available once Ready for
// minReadySeconds; a pod being deleted no longer counts (its termination
// goes on beside the rollout); a Recreate deletes every old pod and waits
// for them to be gone before creating new ones.
type Deployment struct {
	cluster *Cluster
	name    string

	mu   sync.Mutex
	spec appsv1.DeploymentSpec
	sets []*replicaSet // by creation

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

type replicaSet struct {
	name     string
	hash     string
	template corev1.PodTemplateSpec
	replicas int32
	pods     []*Pod // created and not yet gone
	created  time.Time
}

// ApplyDeployment creates a Deployment and starts its controller.
func (c *Cluster) ApplyDeployment(d *appsv1.Deployment) (*Deployment, error) {
	spec := *d.Spec.DeepCopy()
	if spec.Replicas == nil {
		spec.Replicas = new(int32)
		*spec.Replicas = 1
	}
	if spec.Selector == nil {
		return nil, fmt.Errorf("deployment %s: no selector", d.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s: %w", d.Name, err)
	}
	if !sel.Matches(labels.Set(spec.Template.Labels)) {
		return nil, fmt.Errorf("deployment %s: selector does not match the template's labels", d.Name)
	}
	switch spec.Strategy.Type {
	case "", appsv1.RollingUpdateDeploymentStrategyType:
		spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
		if spec.Strategy.RollingUpdate == nil {
			spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		quarter := intstr.FromString("25%")
		if spec.Strategy.RollingUpdate.MaxSurge == nil {
			spec.Strategy.RollingUpdate.MaxSurge = &quarter
		}
		if spec.Strategy.RollingUpdate.MaxUnavailable == nil {
			spec.Strategy.RollingUpdate.MaxUnavailable = &quarter
		}
	case appsv1.RecreateDeploymentStrategyType:
	default:
		return nil, fmt.Errorf("deployment %s: strategy %q", d.Name, spec.Strategy.Type)
	}
	dep := &Deployment{cluster: c, name: d.Name, spec: spec, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go dep.run()
	return dep, nil
}

// Update changes the pod template (a rollout starts when it changed).
func (d *Deployment) Update(change func(*corev1.PodTemplateSpec)) {
	d.mu.Lock()
	change(&d.spec.Template)
	d.mu.Unlock()
	d.cluster.record("deployment/"+d.name, "Updated", "pod template hash %s", d.templateHash())
	d.poke()
}

// Scale sets the number of replicas.
func (d *Deployment) Scale(n int32) {
	d.mu.Lock()
	*d.spec.Replicas = n
	d.mu.Unlock()
	d.poke()
}

func (d *Deployment) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Delete stops the controller and deletes every pod at once (a cascading
// delete); it returns once every pod is gone.
func (d *Deployment) Delete() {
	close(d.stop)
	<-d.done
	d.mu.Lock()
	var pods []*Pod
	for _, rs := range d.sets {
		pods = append(pods, rs.pods...)
	}
	d.mu.Unlock()
	for _, p := range pods {
		p.Delete()
	}
	for _, p := range pods {
		<-p.Done()
	}
}

// templateHash is the pod-template-hash of the current template.
func (d *Deployment) templateHash() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return hashTemplate(&d.spec.Template)
}

// hashTemplate hashes a pod template (FNV-32a of its JSON), encoded as the
// controller encodes pod-template-hash.
func hashTemplate(t *corev1.PodTemplateSpec) string {
	b, err := json.Marshal(t)
	if err != nil {
		panic(err) // a PodTemplateSpec always marshals
	}
	h := fnv.New32a()
	h.Write(b)
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

func (d *Deployment) run() {
	defer close(d.done)
	for {
		changed := d.cluster.Changed()
		d.mu.Lock()
		for d.reconcile() {
		}
		d.mu.Unlock()
		var tick <-chan time.Time
		if d.spec.MinReadySeconds > 0 {
			tick = time.After(100 * time.Millisecond)
		}
		select {
		case <-d.stop:
			return
		case <-d.kick:
		case <-changed:
		case <-tick:
		}
	}
}

// reconcile takes one step, as one sync of the controllers does, and
// reports whether it changed anything (d.mu held).
func (d *Deployment) reconcile() bool {
	for _, rs := range d.sets {
		rs.prune()
	}
	newRS := d.newReplicaSet()
	var acted bool
	if d.spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		acted = d.recreate(newRS)
	} else {
		acted = d.rollingUpdate(newRS)
	}
	for _, rs := range d.sets {
		if d.syncReplicaSet(rs) {
			acted = true
		}
	}
	return acted
}

// newReplicaSet returns the ReplicaSet of the current template, created
// with no replicas when missing.
func (d *Deployment) newReplicaSet() *replicaSet {
	hash := hashTemplate(&d.spec.Template)
	for _, rs := range d.sets {
		if rs.hash == hash {
			return rs
		}
	}
	tmpl := *d.spec.Template.DeepCopy()
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	rs := &replicaSet{name: d.name + "-" + hash, hash: hash, template: tmpl, created: time.Now()}
	d.sets = append(d.sets, rs)
	d.cluster.record("deployment/"+d.name, "NewReplicaSet", "%s", rs.name)
	return rs
}

func (d *Deployment) oldSets(newRS *replicaSet) []*replicaSet {
	var out []*replicaSet
	for _, rs := range d.sets {
		if rs != newRS {
			out = append(out, rs)
		}
	}
	return out
}

// fenceposts resolves maxSurge (rounded up) and maxUnavailable (rounded
// down) against the replicas; both zero means maxUnavailable 1.
func (d *Deployment) fenceposts() (surge, unavailable int32) {
	r := int(*d.spec.Replicas)
	ru := d.spec.Strategy.RollingUpdate
	s, _ := intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, r, true)
	u, _ := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, r, false)
	if s == 0 && u == 0 {
		u = 1
	}
	return int32(s), min(int32(u), *d.spec.Replicas)
}

// rollingUpdate is rolloutRolling: scale the new ReplicaSet up within
// maxSurge, else scale old ones down within maxUnavailable (unhealthy
// replicas first).
func (d *Deployment) rollingUpdate(newRS *replicaSet) bool {
	replicas := *d.spec.Replicas
	surge, maxUnavailable := d.fenceposts()
	total := d.specReplicas(d.sets)
	switch {
	case newRS.replicas > replicas:
		d.scale(newRS, replicas)
		return true
	case newRS.replicas < replicas && total < replicas+surge:
		d.scale(newRS, newRS.replicas+min(replicas+surge-total, replicas-newRS.replicas))
		return true
	}
	old := d.oldSets(newRS)
	if d.specReplicas(old) == 0 {
		return false
	}
	minAvailable := replicas - maxUnavailable
	maxScaledDown := total - minAvailable - (newRS.replicas - d.available(newRS))
	if maxScaledDown <= 0 {
		return false
	}
	acted := false
	cleaned := int32(0)
	for _, rs := range old {
		if cleaned >= maxScaledDown {
			break
		}
		unhealthy := rs.replicas - d.available(rs)
		if rs.replicas == 0 || unhealthy <= 0 {
			continue
		}
		n := min(maxScaledDown-cleaned, unhealthy)
		d.scale(rs, rs.replicas-n)
		cleaned += n
		acted = true
	}
	availableAll := int32(0)
	for _, rs := range d.sets {
		availableAll += d.available(rs)
	}
	if availableAll <= minAvailable {
		return acted
	}
	toScaleDown := availableAll - minAvailable
	scaled := int32(0)
	for _, rs := range old {
		if scaled >= toScaleDown {
			break
		}
		if rs.replicas == 0 {
			continue
		}
		n := min(rs.replicas, toScaleDown-scaled)
		d.scale(rs, rs.replicas-n)
		scaled += n
		acted = true
	}
	return acted
}

// recreate scales every old ReplicaSet to zero and, once none of their
// pods is left (terminating ones included), the new one up.
func (d *Deployment) recreate(newRS *replicaSet) bool {
	acted := false
	left := 0
	for _, rs := range d.oldSets(newRS) {
		if rs.replicas > 0 {
			d.scale(rs, 0)
			acted = true
		}
		left += len(rs.pods)
	}
	if left == 0 && newRS.replicas != *d.spec.Replicas {
		d.scale(newRS, *d.spec.Replicas)
		acted = true
	}
	return acted
}

func (d *Deployment) scale(rs *replicaSet, n int32) {
	d.cluster.record("deployment/"+d.name, "ScalingReplicaSet", "scaled %s from %d to %d", rs.name, rs.replicas, n)
	rs.replicas = n
}

func (d *Deployment) specReplicas(sets []*replicaSet) int32 {
	n := int32(0)
	for _, rs := range sets {
		n += rs.replicas
	}
	return n
}

// available counts a ReplicaSet's pods that are not terminating and have
// been Ready for minReadySeconds.
func (d *Deployment) available(rs *replicaSet) int32 {
	n := int32(0)
	minReady := time.Duration(d.spec.MinReadySeconds) * time.Second
	for _, p := range rs.active() {
		if since := p.ReadySince(); !since.IsZero() && time.Since(since) >= minReady {
			n++
		}
	}
	return n
}

// prune forgets the pods that are gone.
func (rs *replicaSet) prune() {
	kept := rs.pods[:0]
	for _, p := range rs.pods {
		select {
		case <-p.Done():
		default:
			kept = append(kept, p)
		}
	}
	rs.pods = kept
}

// active are the ReplicaSet's pods that are not terminating.
func (rs *replicaSet) active() []*Pod {
	var out []*Pod
	for _, p := range rs.pods {
		if !p.Terminating() {
			out = append(out, p)
		}
	}
	return out
}

// syncReplicaSet is the ReplicaSet controller's manageReplicas: create or
// delete pods until the active ones match the replicas.
func (d *Deployment) syncReplicaSet(rs *replicaSet) bool {
	active := rs.active()
	diff := len(active) - int(rs.replicas)
	switch {
	case diff < 0:
		for range -diff {
			name := rs.name + "-" + rand.String(5)
			p, err := d.cluster.RunPod(name, rs.template)
			if err != nil {
				d.cluster.record("replicaset/"+rs.name, "FailedCreate", "%v", err)
				return false
			}
			rs.pods = append(rs.pods, p)
			d.cluster.record("replicaset/"+rs.name, "SuccessfulCreate", "created pod %s", name)
		}
		return true
	case diff > 0:
		rankForDeletion(active)
		for _, p := range active[:diff] {
			p.Delete()
			d.cluster.record("replicaset/"+rs.name, "SuccessfulDelete", "deleted pod %s", p.name)
		}
		return true
	}
	return false
}

// rankForDeletion orders pods as the ReplicaSet controller picks which to
// delete first (ActivePodsWithRanks): pending before running, not Ready
// before Ready, Ready for less time before longer, more restarts before
// fewer, newer before older. (The controller compares ready and creation
// times in powers of two of their age; this compares them exactly.)
func rankForDeletion(pods []*Pod) {
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := pods[i], pods[j]
		if pa, pb := a.Phase() == corev1.PodPending, b.Phase() == corev1.PodPending; pa != pb {
			return pa
		}
		ra, rb := a.ReadySince(), b.ReadySince()
		if ra.IsZero() != rb.IsZero() {
			return ra.IsZero()
		}
		if !ra.Equal(rb) {
			return ra.After(rb)
		}
		if a.Restarts() != b.Restarts() {
			return a.Restarts() > b.Restarts()
		}
		return a.created.After(b.created)
	})
}

// Status is what kubectl shows of a Deployment: pods that are not
// terminating (Replicas), of the current template (Updated), Ready, and
// available; plus pods still terminating.
type Status struct {
	Replicas, Updated, Ready, Available, Terminating int32
}

// Status returns the Deployment's status now.
func (d *Deployment) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status()
}

func (d *Deployment) status() Status {
	var s Status
	hash := hashTemplate(&d.spec.Template)
	for _, rs := range d.sets {
		for _, p := range rs.pods {
			select {
			case <-p.Done():
				continue
			default:
			}
			if p.Terminating() {
				s.Terminating++
				continue
			}
			s.Replicas++
			if rs.hash == hash {
				s.Updated++
			}
			if p.Ready() {
				s.Ready++
			}
		}
		s.Available += d.available(rs)
	}
	return s
}

// rolledOut is kubectl rollout status's test: every replica updated, no
// old replica left (terminating ones do not count), every updated one
// available.
func (d *Deployment) rolledOut() (bool, string) {
	s := d.status()
	replicas := *d.spec.Replicas
	switch {
	case s.Updated < replicas:
		return false, fmt.Sprintf("%d out of %d new replicas have been updated", s.Updated, replicas)
	case s.Replicas > s.Updated:
		return false, fmt.Sprintf("%d old replicas are pending termination", s.Replicas-s.Updated)
	case s.Available < s.Updated:
		return false, fmt.Sprintf("%d of %d updated replicas are available", s.Available, s.Updated)
	}
	return true, ""
}

// AwaitRollout waits as kubectl rollout status does; with settled, also
// until no pod is terminating.
func (d *Deployment) AwaitRollout(timeout time.Duration, settled bool) error {
	deadline := time.After(timeout)
	for {
		ch := d.cluster.Changed()
		d.mu.Lock()
		ok, why := d.rolledOut()
		s := d.status()
		d.mu.Unlock()
		if ok && settled && s.Terminating > 0 {
			ok, why = false, fmt.Sprintf("%d pods terminating", s.Terminating)
		}
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond): // minReadySeconds passing changes no pod
		case <-deadline:
			return fmt.Errorf("deployment %s: rollout not done within %s: %s", d.name, timeout, why)
		}
	}
}

// Pods returns the Deployment's pods that exist (terminating ones
// included), oldest first.
func (d *Deployment) Pods() []*Pod {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*Pod
	for _, rs := range d.sets {
		for _, p := range rs.pods {
			select {
			case <-p.Done():
			default:
				out = append(out, p)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].created.Before(out[j].created) })
	return out
}

// String describes the ReplicaSets, for logs.
func (d *Deployment) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var parts []string
	for _, rs := range d.sets {
		parts = append(parts, fmt.Sprintf("%s=%d/%d", rs.name, len(rs.active()), rs.replicas))
	}
	return strings.Join(parts, " ")
}
