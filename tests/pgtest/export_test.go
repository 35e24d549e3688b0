package pgtest

// Processes exposes the live processes of the cluster to the external tests.
func (c *Cluster) Processes() []int { return c.processes() }
