// Package podrunner runs Kubernetes workloads as local processes, the way
// the kubelet and the controllers would run them on one node, for tests.
//
// A Cluster runs pods from k8s.io/api pod templates: each container is a
// process of the program that stands for its image (Options.Images), with
// the environment the kubelet would give it (envFrom and env in order,
// $(VAR) expansion, fieldRef, resourceFieldRef, secretKeyRef and
// configMapKeyRef, the variables of the Services created before the pod).
// Init containers run in order; a native sidecar (an init container with
// restartPolicy Always) must be started — its startup probe passed — before
// the next container starts. Probes (gRPC, httpGet, tcpSocket) run with the
// declared initialDelaySeconds, periodSeconds, timeoutSeconds,
// successThreshold and failureThreshold; a failed startup or liveness probe
// restarts the container (preStop hook, SIGTERM, SIGKILL after the grace
// period), and an exited container is restarted with the kubelet's
// back-off. A pod is Ready when every main container and sidecar is.
// Deleting a pod stops its main containers first and its sidecars, in
// reverse order, once the main containers have exited; SIGKILL at
// terminationGracePeriodSeconds from the start of the deletion.
//
// A Deployment rolls its pods as the Deployment and ReplicaSet controllers
// do (maxSurge, maxUnavailable, minReadySeconds, Ready before available);
// a Service hands each new TCP connection to a Ready, non-terminating pod
// and records the HTTP statuses it relays.
//
// Where this differs from a node: every pod's address is 127.0.0.1, so
// each pod's ports (its containerPorts and the addresses its images listen
// on by default, Image.Addresses) are moved to free ports, and the
// container environment is rewritten to match — any address host:port or
// :port whose host means the pod (127.0.0.1, localhost, 0.0.0.0, [::]) and
// whose port is one of the pod's, in any variable not read from a Secret
// (BATON_BROKER_LISTEN, BATON_BROKER_ADDR, BATON_ADVERTISE_URL, ...);
// probes and Services use the moved ports. There is no mount namespace
// either: a path at or under a volumeMount's mountPath, in a variable,
// command, args or workingDir, is rewritten to the volume's folder
// (emptyDir: one per pod; persistentVolumeClaim: one per claim, shared;
// secret and configMap: their keys as files). The host name is the
// machine's (HOSTNAME is set to the pod's name); resource limits,
// securityContext and readOnlyRootFilesystem are not enforced; exec probes
// and hooks are refused.
package podrunner
