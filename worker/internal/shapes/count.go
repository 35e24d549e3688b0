package shapes

// Shape states, as Registry.Count reports them.
const (
	// StateCreating: the shape's snapshot is being taken.
	StateCreating = "creating"
	// StateInUse: a request holds the shape (Shape.Use), a long-poll or an
	// SSE response waiting for changes included.
	StateInUse = "in_use"
	// StateIdle: the shape is stored and served, and no request holds it.
	StateIdle = "idle"
)

// States lists the shape states.
var States = []string{StateCreating, StateInUse, StateIdle}

// Count returns how many shapes the registry has in each state. Safe for
// concurrent use.
func (r *Registry) Count() map[string]int {
	n := map[string]int{StateCreating: int(r.creatingN.Load())}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.byDef {
		if s.filling.Load() {
			continue // counted as creating
		}
		if s.use.inFlight.Load() > 0 {
			n[StateInUse]++
		} else {
			n[StateIdle]++
		}
	}
	return n
}
