package httpapi

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

// parseSubset reads a GET's subset__* parameters and a POST's JSON body
// alike, and names the field of every problem as Electric's
// errors.subset does.
func TestParseSubset(t *testing.T) {
	for _, c := range []struct {
		name   string
		query  url.Values
		body   string
		params []string
		limit  int64
		offset int64
		order  string
		field  string // of the expected error, "" for none
		msg    string
	}{
		{name: "get", query: url.Values{"subset__where": {"id > $1 AND grp = $2"}, "subset__params": {`{"1":"5","2":"x"}`},
			"subset__order_by": {"id desc"}, "subset__limit": {"3"}, "subset__offset": {"1"}},
			params: []string{"5", "x"}, limit: 3, offset: 1, order: "id DESC"},
		{name: "post", body: `{"where":"id = $1","params":{"1":5},"order_by":"id","limit":2,"where_expr":{"type":"func"}}`,
			params: []string{"5"}, limit: 2, order: "id"},
		{name: "post over query", query: url.Values{"subset__limit": {"9"}}, body: `{"order_by":"id","limit":4}`, limit: 4, order: "id"},
		{name: "limit without order", query: url.Values{"subset__limit": {"3"}}, field: "order_by", msg: "required"},
		{name: "offset without order", body: `{"offset":0}`, field: "order_by", msg: "required"},
		{name: "zero limit", query: url.Values{"subset__limit": {"0"}, "subset__order_by": {"id"}}, field: "limit", msg: "greater than 0"},
		{name: "negative offset", body: `{"offset":-1,"order_by":"id"}`, field: "offset", msg: "greater than or equal to 0"},
		{name: "text limit", query: url.Values{"subset__limit": {"ten"}, "subset__order_by": {"id"}}, field: "limit", msg: "invalid"},
		{name: "where syntax", query: url.Values{"subset__where": {"1 x 1"}}, field: "where", msg: "At location 17"},
		{name: "params gap", body: `{"where":"id = $1","params":{"2":"1"}}`, field: "params", msg: "without gaps"},
		{name: "params not json", query: url.Values{"subset__where": {"id = $1"}, "subset__params": {"1"}}, field: "params", msg: "JSON object"},
		{name: "params without where", body: `{"params":{"1":"1"}}`, field: "params", msg: "without a where"},
		{name: "where not text", body: `{"where":1}`, field: "where", msg: "string"},
		{name: "order by using", query: url.Values{"subset__order_by": {"id USING <"}}, field: "order_by", msg: "USING"},
		{name: "unknown", query: url.Values{"subset__whare": {"id = 1"}}, field: "whare", msg: "not a subset parameter"},
		{name: "expr alone", body: `{"where_expr":{}}`, field: "where_expr", msg: "beside where"},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, errs := subsetFromBody([]byte(c.body), subsetFromQuery(c.query))
			if errs != nil {
				t.Fatalf("body: %v", errs)
			}
			sub, errs := parseSubset(raw)
			if c.field != "" {
				if len(errs[c.field]) != 1 || !strings.Contains(errs[c.field][0], c.msg) {
					t.Fatalf("errors %v; want %s saying %q", errs, c.field, c.msg)
				}
				return
			}
			if errs != nil {
				t.Fatalf("errors %v", errs)
			}
			order := ""
			if sub.OrderBy != nil {
				order = sub.OrderBy.SQL()
			}
			if !slices.Equal(sub.Params, c.params) || sub.Limit != c.limit || sub.Offset != c.offset || order != c.order {
				t.Fatalf("got params %q limit %d offset %d order %q", sub.Params, sub.Limit, sub.Offset, order)
			}
		})
	}
	if _, errs := subsetFromBody([]byte("[1]"), nil); errs["body"] == nil {
		t.Errorf("a body that is no JSON object: %v; want an error naming body", errs)
	}
}
