package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/batonhq/baton/worker/internal/shapes"
	"github.com/batonhq/baton/worker/internal/shapes/where"
)

// Subset snapshots, as Electric serves them: GET /v1/shape with
// subset__where, subset__params, subset__limit, subset__offset and
// subset__order_by, or POST /v1/shape with the same (without the prefix)
// in a JSON body, answer {"metadata": {...}, "data": [...]}: the rows of
// the shape that match the subset, read in a snapshot of their own (see
// shapes.QuerySubset and the shapes package doc).

// maxSubsetBody bounds a POST's body.
const maxSubsetBody = 1 << 20

// subsetKeys are the subset parameters; where_expr and order_by_expr are
// the client's structured forms of where and order_by, which it sends
// beside their text: the text is what is used.
var subsetKeys = map[string]bool{"where": true, "params": true, "limit": true, "offset": true, "order_by": true, "where_expr": true, "order_by_expr": true}

// subsetRaw is a subset request before validation: each field's JSON
// value (from a POST body) or text (from subset__* query parameters).
type subsetRaw map[string]json.RawMessage

// subsetFromQuery collects the subset__* parameters of q; nil when there
// are none.
func subsetFromQuery(q url.Values) subsetRaw {
	var raw subsetRaw
	for k, v := range q {
		name, ok := strings.CutPrefix(k, "subset__")
		if !ok {
			continue
		}
		if raw == nil {
			raw = subsetRaw{}
		}
		b, _ := json.Marshal(v[len(v)-1])
		raw[name] = b
	}
	return raw
}

// subsetFromBody reads the JSON object of a POST's body into raw (over
// what the query gave).
func subsetFromBody(body []byte, raw subsetRaw) (subsetRaw, map[string][]string) {
	if len(bytes.TrimSpace(body)) == 0 {
		return raw, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return raw, map[string][]string{"body": {"must be a JSON object"}}
	}
	if raw == nil {
		raw = subsetRaw{}
	}
	for k, v := range fields {
		if string(v) != "null" {
			raw[k] = v
		}
	}
	return raw, nil
}

// parseSubset validates a subset request; errors name its fields (where,
// params, limit, offset, order_by), as Electric's errors.subset does.
func parseSubset(raw subsetRaw) (shapes.Subset, map[string][]string) {
	var sub shapes.Subset
	errs := map[string][]string{}
	add := func(f, msg string) { errs[f] = append(errs[f], msg) }
	for k := range raw {
		if !subsetKeys[k] {
			add(k, "is not a subset parameter (where, params, limit, offset, order_by)")
		}
	}
	text := func(k string) (string, bool) {
		v, ok := raw[k]
		if !ok {
			return "", false
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			add(k, "must be a string")
			return "", false
		}
		return s, true
	}
	integer := func(k string, min int64, msg string) (int64, bool) {
		v, ok := raw[k]
		if !ok {
			return 0, false
		}
		s := strings.Trim(string(v), `"`)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			add(k, "is invalid")
			return 0, false
		}
		if n < min {
			add(k, msg)
			return 0, false
		}
		return n, true
	}
	if n, ok := integer("limit", 1, "must be greater than 0"); ok {
		sub.Limit = n
	}
	if n, ok := integer("offset", 0, "must be greater than or equal to 0"); ok {
		sub.Offset = n
	}
	_, hasLimit := raw["limit"]
	_, hasOffset := raw["offset"]
	limited := hasLimit || hasOffset
	if ob, ok := text("order_by"); ok {
		o, err := where.ParseOrderBy(ob)
		var we *where.Error
		switch {
		case errors.As(err, &we):
			add("order_by", we.Message)
		case err != nil:
			add("order_by", err.Error())
		default:
			sub.OrderBy = o
		}
	} else if _, given := raw["order_by"]; !given && limited {
		add("order_by", "order_by is required when limit or offset is present")
	}
	if _, ok := raw["where_expr"]; ok {
		if _, w := raw["where"]; !w {
			add("where_expr", "is only accepted beside where, which is what is used")
		}
	}
	if _, ok := raw["order_by_expr"]; ok {
		if _, o := raw["order_by"]; !o {
			add("order_by_expr", "is only accepted beside order_by, which is what is used")
		}
	}
	params, perr := subsetParams(raw["params"])
	if perr != "" {
		add("params", perr)
	}
	if w, ok := text("where"); ok {
		c, err := where.Parse(w)
		var we *where.Error
		switch {
		case errors.As(err, &we):
			add(we.Field, we.Message)
		case err != nil:
			add("where", err.Error())
		default:
			sub.Where, sub.Params = c, params
		}
	} else if len(params) > 0 {
		add("params", "given without a where clause")
	}
	if len(errs) > 0 {
		return sub, errs
	}
	return sub, nil
}

// subsetParams reads the subset's params: a JSON object {"1": v1, "2":
// v2, ...} (in a GET, the text of one), values strings or numbers, numbered
// 1..n without gaps.
func subsetParams(v json.RawMessage) ([]string, string) {
	if v == nil {
		return nil, ""
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		v = json.RawMessage(s)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err != nil {
		return nil, "must be a JSON object such as {\"1\": \"value\"}"
	}
	byNum := map[int]string{}
	for k, raw := range obj {
		n, err := strconv.Atoi(k)
		if err != nil || n < 1 || strconv.Itoa(n) != k {
			return nil, "invalid parameter name " + strconv.Quote(k) + ": use \"1\", \"2\", ..."
		}
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			var num json.Number
			d := json.NewDecoder(bytes.NewReader(raw))
			d.UseNumber()
			if d.Decode(&num) != nil {
				return nil, "params[" + k + "] must be a string or a number"
			}
			text = num.String()
		}
		byNum[n] = text
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

// subsetInvalid answers 400 with the subset's problems under
// errors.subset, as Electric does.
func subsetInvalid(w http.ResponseWriter, errs map[string][]string) {
	errorJSON(w, http.StatusBadRequest, struct {
		Message string                         `json:"message"`
		Errors  map[string]map[string][]string `json:"errors"`
	}{"Invalid request", map[string]map[string][]string{"subset": errs}})
}

func (s *Server) postShape(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	// Read now, so that a forward to the active worker can send it again.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSubsetBody))
	if err != nil {
		errorJSON(w, http.StatusRequestEntityTooLarge, errorBody{Message: "the body of a subset request is at most 1 MiB"})
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	reg := s.current()
	if reg == nil {
		s.elsewhere(w, r, s.servePost)
		return
	}
	s.servePost(w, r, reg)
}

// servePost answers a POST from reg: a subset snapshot whose subset is in
// the body (the shape's parameters are in the query, as for a GET).
func (s *Server) servePost(w http.ResponseWriter, r *http.Request, reg *shapes.Registry) {
	cors(w, r)
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	q := r.URL.Query()
	raw, errs := subsetFromBody(body, subsetFromQuery(q))
	if errs != nil {
		invalid(w, errs)
		return
	}
	if raw == nil {
		subsetInvalid(w, map[string][]string{"where": {"a POST to /v1/shape is a subset snapshot: its body must hold the subset (where, params, limit, offset, order_by)"}})
		return
	}
	p, errs := parseParams(q)
	if errs != nil {
		invalid(w, errs)
		return
	}
	s.serveSubset(w, r, reg, p, raw)
}

// serveSubset answers a subset snapshot of the shape of p.
func (s *Server) serveSubset(w http.ResponseWriter, r *http.Request, reg *shapes.Registry, p params, raw subsetRaw) {
	sub, errs := parseSubset(raw)
	if errs != nil {
		subsetInvalid(w, errs)
		return
	}
	sh, ok := s.resolve(w, r, reg, p)
	if !ok {
		return
	}
	done := sh.Use()
	defer done()
	ctx, stop := s.whileLeased(r)
	snap, err := reg.QuerySubset(ctx, sh, sub, p.now)
	stop()
	var ie *shapes.InvalidError
	switch {
	case errors.As(err, &ie):
		subsetInvalid(w, map[string][]string{ie.Field: {ie.Problem}})
		return
	case err != nil && r.Context().Err() != nil:
		return
	case err != nil && s.current() != reg:
		// The lease ended under the query: answered where the stream is
		// served now.
		s.elsewhere(w, r, func(w http.ResponseWriter, r *http.Request, reg *shapes.Registry) {
			s.serveSubset(w, r, reg, p, raw)
		})
		return
	case err != nil:
		s.planErr(w, r, reg, p, err)
		return
	}
	// The client moves its log position to electric-offset: the request's
	// own (it has the log up to there), or, for offset=now, the log's end
	// read before the snapshot (see the shapes package doc).
	off := p.offset.String()
	if p.now {
		off = snap.Start.String()
	}
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("electric-snapshot", "true")
	h.Set("electric-handle", sh.Handle())
	h.Set("electric-offset", off)
	h.Set("electric-schema", sh.Schema())
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	b := make([]byte, 0, len(snap.Rows)+256)
	b = append(b, `{"metadata":{"xmin":`...)
	b = strconv.AppendUint(b, snap.Xmin, 10)
	b = append(b, `,"xmax":`...)
	b = strconv.AppendUint(b, snap.Xmax, 10)
	b = append(b, `,"xip_list":[`...)
	for i, x := range snap.Xip {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, x, 10)
	}
	b = append(b, `],"database_lsn":"`...)
	b = strconv.AppendUint(b, snap.DatabaseLSN, 10)
	b = append(b, `","snapshot_mark":`...)
	b = strconv.AppendInt(b, snap.Mark, 10)
	b = append(b, `},"data":[`...)
	b = append(b, snap.Rows...)
	b = append(b, "]}"...)
	_, _ = w.Write(b)
}
