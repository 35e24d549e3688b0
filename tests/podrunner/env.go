package podrunner

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// expand replaces $(VAR) references in s as the kubelet does
// (k8s.io/kubernetes third_party/forked/golang/expansion): a reference to a
// defined variable becomes its value, an undefined one stays as written,
// $$ is a literal $, and a $ that starts no reference stays.
func expand(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	checkpoint := 0
	for cursor := 0; cursor < len(s); cursor++ {
		if s[cursor] != '$' || cursor+1 >= len(s) {
			continue
		}
		b.WriteString(s[checkpoint:cursor])
		read, isVar, advance := readVariableName(s[cursor+1:])
		if isVar {
			if v, ok := lookup(read); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + read + ")")
			}
		} else {
			b.WriteString(read)
		}
		cursor += advance
		checkpoint = cursor + 1
	}
	return b.String() + s[checkpoint:]
}

// readVariableName reads what follows a $: the name of a $(NAME)
// reference, or the bytes to copy as they are, and how many bytes it
// consumed.
func readVariableName(s string) (read string, isVar bool, advance int) {
	switch s[0] {
	case '$':
		return "$", false, 1
	case '(':
		for i := 1; i < len(s); i++ {
			if s[i] == ')' {
				return s[1:i], true, i + 1
			}
		}
		return "$(", false, 1
	default:
		return "$" + s[:1], false, 1
	}
}

// envVar is one resolved variable of a container's environment, with
// whether its value came from a Secret (such values are never rewritten).
type envVar struct {
	value  string
	secret bool
}

// containerEnv resolves a container's environment as the kubelet does
// (makeEnvironmentVariables): Service variables lowest, then envFrom in
// order, then env in order, each env value expanded against what is
// defined so far.
func (p *Pod) containerEnv(c *corev1.Container) (map[string]envVar, error) {
	out := map[string]envVar{}
	services := map[string]string{}
	if p.spec.EnableServiceLinks == nil || *p.spec.EnableServiceLinks {
		services = p.cluster.serviceEnv()
	}
	lookup := func(name string) (string, bool) {
		if v, ok := out[name]; ok {
			return v.value, true
		}
		v, ok := services[name]
		return v, ok
	}
	for _, from := range c.EnvFrom {
		var data map[string]string
		secret := false
		switch {
		case from.SecretRef != nil:
			d, ok := p.cluster.opts.Secrets[from.SecretRef.Name]
			if !ok && !optional(from.SecretRef.Optional) {
				return nil, fmt.Errorf("secret %q not found", from.SecretRef.Name)
			}
			data, secret = d, true
		case from.ConfigMapRef != nil:
			d, ok := p.cluster.opts.ConfigMaps[from.ConfigMapRef.Name]
			if !ok && !optional(from.ConfigMapRef.Optional) {
				return nil, fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)
			}
			data = d
		default:
			return nil, fmt.Errorf("envFrom: neither secretRef nor configMapRef")
		}
		for k, v := range data {
			name := from.Prefix + k
			if !envName.MatchString(name) {
				continue // the kubelet skips invalid names
			}
			out[name] = envVar{value: v, secret: secret}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			out[e.Name] = envVar{value: expand(e.Value, lookup)}
			continue
		}
		v, secret, err := p.valueFrom(c, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		out[e.Name] = envVar{value: v, secret: secret}
	}
	for k, v := range services {
		if _, ok := out[k]; !ok {
			out[k] = envVar{value: v}
		}
	}
	return out, nil
}

var envName = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)

func optional(b *bool) bool { return b != nil && *b }

// valueFrom resolves env[].valueFrom.
func (p *Pod) valueFrom(c *corev1.Container, src *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case src.FieldRef != nil:
		v, err := p.fieldValue(src.FieldRef.FieldPath)
		return v, false, err
	case src.ResourceFieldRef != nil:
		v, err := resourceValue(c, src.ResourceFieldRef)
		return v, false, err
	case src.SecretKeyRef != nil:
		v, err := lookupKey(p.cluster.opts.Secrets, "secret", src.SecretKeyRef.Name, src.SecretKeyRef.Key, src.SecretKeyRef.Optional)
		return v, true, err
	case src.ConfigMapKeyRef != nil:
		v, err := lookupKey(p.cluster.opts.ConfigMaps, "configmap", src.ConfigMapKeyRef.Name, src.ConfigMapKeyRef.Key, src.ConfigMapKeyRef.Optional)
		return v, false, err
	}
	return "", false, fmt.Errorf("valueFrom names no source")
}

func lookupKey(all map[string]map[string]string, kind, name, key string, opt *bool) (string, error) {
	data, ok := all[name]
	if !ok {
		if optional(opt) {
			return "", nil
		}
		return "", fmt.Errorf("%s %q not found", kind, name)
	}
	v, ok := data[key]
	if !ok && !optional(opt) {
		return "", fmt.Errorf("key %q not found in %s %q", key, kind, name)
	}
	return v, nil
}

// fieldValue is a fieldRef's value for this pod (the kubelet's
// podFieldSelectorRuntimeValue and the API server's downward API fields).
func (p *Pod) fieldValue(path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.name, nil
	case "metadata.namespace":
		return p.namespace(), nil
	case "metadata.uid":
		return string(p.meta.UID), nil
	case "spec.nodeName":
		return nodeName, nil
	case "spec.serviceAccountName":
		if p.spec.ServiceAccountName == "" {
			return "default", nil
		}
		return p.spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
		return podIP, nil
	}
	for _, f := range []struct {
		prefix string
		m      map[string]string
	}{{"metadata.labels", p.meta.Labels}, {"metadata.annotations", p.meta.Annotations}} {
		if path == f.prefix {
			return formatMap(f.m), nil
		}
		if rest, ok := strings.CutPrefix(path, f.prefix+"['"); ok && strings.HasSuffix(rest, "']") {
			return f.m[strings.TrimSuffix(rest, "']")], nil
		}
	}
	return "", fmt.Errorf("fieldRef %q is not supported", path)
}

// formatMap formats labels or annotations as the downward API does:
// key="value" lines, sorted.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	lines := make([]string, len(keys))
	for i, k := range keys {
		lines[i] = k + "=" + strconv.Quote(m[k])
	}
	return strings.Join(lines, "\n")
}

// resourceValue is a resourceFieldRef's value: the container's request or
// limit divided by the divisor, rounded up; a missing limit is the node's
// capacity (this machine's), as the kubelet does.
func resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(res)]
	if !ok {
		// A missing request is the limit if any, else 0 for cpu and
		// memory requests; a missing limit is the node's capacity.
		if l, hasLimit := c.Resources.Limits[corev1.ResourceName(res)]; kind == "requests" && hasLimit {
			q = l
		} else if kind == "requests" {
			q = resource.Quantity{}
		} else {
			var err error
			if q, err = capacity(corev1.ResourceName(res)); err != nil {
				return "", err
			}
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if res == "cpu" {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// capacity is this machine's capacity of a resource, the node's
// allocatable in the kubelet's terms.
func capacity(res corev1.ResourceName) (resource.Quantity, error) {
	switch res {
	case corev1.ResourceCPU:
		return *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI), nil
	case corev1.ResourceMemory:
		b, err := os.ReadFile("/proc/meminfo")
		if err != nil {
			return resource.Quantity{}, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					return resource.Quantity{}, err
				}
				return *resource.NewQuantity(kb*1024, resource.BinarySI), nil
			}
		}
		return resource.Quantity{}, fmt.Errorf("MemTotal not in /proc/meminfo")
	}
	return resource.Quantity{}, fmt.Errorf("capacity of %q is not supported", res)
}

// serviceLinkName is the prefix of a Service's variables: FOO_BAR for
// foo-bar.
func serviceLinkName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// serviceLinkEnv are the variables the kubelet sets for one Service
// (envvars.FromServices): its host and ports, and the Docker link style
// ones.
func serviceLinkEnv(name, host string, ports []servicePortAddr) map[string]string {
	if len(ports) == 0 {
		return nil
	}
	n := serviceLinkName(name)
	out := map[string]string{
		n + "_SERVICE_HOST": host,
		n + "_SERVICE_PORT": strconv.Itoa(ports[0].port),
		n + "_PORT":         fmt.Sprintf("tcp://%s:%d", host, ports[0].port),
	}
	for _, sp := range ports {
		if sp.name != "" {
			out[n+"_SERVICE_PORT_"+serviceLinkName(sp.name)] = strconv.Itoa(sp.port)
		}
		prefix := fmt.Sprintf("%s_PORT_%d_TCP", n, sp.declared)
		out[prefix] = fmt.Sprintf("tcp://%s:%d", host, sp.port)
		out[prefix+"_PROTO"] = "tcp"
		out[prefix+"_PORT"] = strconv.Itoa(sp.port)
		out[prefix+"_ADDR"] = host
	}
	return out
}
