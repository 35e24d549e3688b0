package httpapi

import (
	"errors"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/batonhq/baton/worker/internal/shapes"
	"github.com/batonhq/baton/worker/internal/shapes/where"
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
// to its problems. Unknown parameters are ignored; subset__* are a subset
// snapshot's (subset.go).
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
	p.def = parseDefinition(q, add)
	if len(errs) > 0 {
		return p, errs
	}
	return p, nil
}

// parseShapeParams reads the where clause's params: params[1]=..,
// params[2]=.. (how the TypeScript client sends them, also as the
// deep-object form params%5B1%5D). They must be numbered 1..n without gaps.
func parseShapeParams(q url.Values) ([]string, string) {
	byNum := map[int]string{}
	for k, v := range q {
		if !strings.HasPrefix(k, "params[") || !strings.HasSuffix(k, "]") {
			if k == "params" {
				return nil, "must be given as params[1]=value, params[2]=value, ..."
			}
			continue
		}
		num := k[len("params[") : len(k)-1]
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || strconv.Itoa(n) != num {
			return nil, "invalid parameter name " + strconv.Quote(k) + ": use params[1], params[2], ..."
		}
		if len(v) != 1 {
			return nil, k + " is given more than once"
		}
		byNum[n] = v[0]
	}
	nums := make([]int, 0, len(byNum))
	for n := range byNum {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	out := make([]string, len(nums))
	for i, n := range nums {
		if n != i+1 {
			return nil, "params must be numbered 1, 2, ... without gaps: $" + strconv.Itoa(i+1) + " is missing"
		}
		out[i] = byNum[n]
	}
	return out, ""
}

// parseDefinition reads a shape's definition from q: table, where with
// params, columns, replica and log. Problems go to add.
func parseDefinition(q url.Values, add func(field, msg string)) (def shapes.Definition) {
	if q.Get("table") == "" {
		add("table", "can't be blank")
	} else if d, err := shapes.ParseTable(q.Get("table")); err != nil {
		add("table", err.Error())
	} else if why := refusedSchema(d.Schema); why != "" {
		add("table", why)
	} else {
		def = d
	}
	params, perr := parseShapeParams(q)
	if perr != "" {
		add("params", perr)
	}
	if w := q.Get("where"); w != "" {
		c, err := where.Parse(w)
		var we *where.Error
		switch {
		case errors.As(err, &we):
			add(we.Field, we.Message)
		case err != nil:
			add("where", err.Error())
		default:
			def.Where = c.SQL()
			def.Params = params
		}
	} else if len(params) > 0 {
		add("params", "given without a where clause")
	}
	if _, ok := q["columns"]; ok {
		cols, err := shapes.ParseColumns(q.Get("columns"))
		if err != nil {
			add("columns", err.Error())
		}
		def.Columns = cols
	}
	switch v := q.Get("replica"); v {
	case "", "default":
	case "full":
		def.Replica = "full"
	default:
		add("replica", "must be default or full")
	}
	switch v := q.Get("log"); v {
	case "", "full":
	case "changes_only":
		def.ChangesOnly = true
	default:
		add("log", "must be full or changes_only")
	}
	return def
}
