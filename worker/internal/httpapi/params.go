package httpapi

import (
	"net/url"

	"github.com/batonhq/baton/worker/internal/shapes"
)

// params are the validated query parameters of GET /v1/shape.
type params struct {
	def    shapes.Definition
	offset shapes.Offset
	now    bool // offset=now
	handle string
	live   bool
	sse    bool
	cursor string
}

func parseBool(v string) (bool, bool) {
	switch v {
	case "", "false":
		return false, true
	case "true":
		return true, true
	}
	return false, false
}

// parseParams validates q the way Electric does; errors map each bad field
// to its problems. Unknown parameters are ignored.
func parseParams(q url.Values) (params, map[string][]string) {
	var p params
	errs := map[string][]string{}
	add := func(f, msg string) { errs[f] = append(errs[f], msg) }
	var ok bool
	if p.live, ok = parseBool(q.Get("live")); !ok {
		add("live", "is invalid")
	}
	if p.sse, ok = parseBool(q.Get("live_sse")); !ok {
		add("live_sse", "is invalid")
	}
	if !p.sse {
		if p.sse, ok = parseBool(q.Get("experimental_live_sse")); !ok {
			add("experimental_live_sse", "is invalid")
		}
	}
	p.handle, p.cursor = q.Get("handle"), q.Get("cursor")
	switch off := q.Get("offset"); off {
	case "":
		add("offset", "can't be blank")
	case "now":
		p.now = true
	default:
		o, err := shapes.ParseOffset(off)
		if err != nil {
			add("offset", err.Error())
		}
		p.offset = o
	}
	if _, bad := errs["offset"]; !bad {
		if !p.now && !p.offset.BeforeAll && p.handle == "" {
			add("handle", "can't be blank when offset != -1")
		}
		if p.live && p.offset.BeforeAll && !p.now {
			add("live", "can't be true when offset == -1")
		}
		if p.live && p.now {
			add("live", "can't be true when offset is 'now'")
		}
	}
	if p.sse && !p.live {
		add("live_sse", "can't be true unless live is also true")
	}
	if q.Get("table") == "" {
		add("table", "can't be blank")
	} else if d, err := shapes.ParseTable(q.Get("table")); err != nil {
		add("table", err.Error())
	} else {
		p.def = d
	}
	if q.Get("where") != "" {
		add("where", "where clauses are not supported yet: shapes are whole tables")
	}
	if q.Get("columns") != "" {
		add("columns", "column selection is not supported yet: shapes are whole tables")
	}
	if v := q.Get("replica"); v != "" && v != "default" {
		add("replica", "only replica=default is supported")
	}
	if len(errs) > 0 {
		return p, errs
	}
	return p, nil
}
