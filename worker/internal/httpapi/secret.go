package httpapi

// What a shape request may ask for, checked before anything else (before
// it is held or forwarded to the active worker): the secret, DELETE, and
// the schemas no shape may read.

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
)

// authorized reports whether r may use the shape API: when the server has
// a Secret, r carries it as the secret query parameter (as Electric's
// client sends it) or, as Electric still accepts, api_secret. Otherwise it
// answers 401 with Electric's JSON message and returns false.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.Secret == "" {
		return true
	}
	q := r.URL.Query()
	got, ok := q["secret"]
	if !ok {
		got = q["api_secret"]
	}
	if len(got) == 1 && subtle.ConstantTimeCompare([]byte(got[0]), []byte(s.Secret)) == 1 {
		return true
	}
	cors(w, r)
	errorJSON(w, http.StatusUnauthorized, errorBody{Message: "Unauthorized - Invalid API secret"})
	return false
}

// deletionAllowed reports whether DELETE /v1/shape may remove shapes;
// otherwise it answers 405, as Electric does without
// allow_shape_deletion, and returns false.
func (s *Server) deletionAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.AllowDeletion {
		return true
	}
	cors(w, r)
	w.Header().Set("Allow", "GET, HEAD, OPTIONS")
	errorJSON(w, http.StatusMethodNotAllowed, errorBody{Message: "DELETE not allowed (the worker's BATON_ALLOW_SHAPE_DELETION is not true)"})
	return false
}

// refusedSchema says why no shape may read a table of schema, or "": Baton's
// own schema (its lease and state tables) and the system catalogs
// (pg_catalog, information_schema, and every pg_* schema PostgreSQL
// reserves, such as pg_toast).
func refusedSchema(schema string) string {
	switch {
	case schema == "baton":
		return `schema "baton" is Baton's own: its tables are not served as shapes`
	case schema == "information_schema", strings.HasPrefix(schema, "pg_"):
		return "schema " + quoteIdent(schema) + " is a system catalog: its tables are not served as shapes"
	}
	return ""
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// redactQuery is a raw query for a log line: the secret's value (secret,
// api_secret) replaced.
func redactQuery(raw string) string {
	if !strings.Contains(raw, "secret") {
		return raw
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "(unreadable query)"
	}
	for _, k := range []string{"secret", "api_secret"} {
		if _, ok := q[k]; ok {
			q[k] = []string{"REDACTED"}
		}
	}
	return q.Encode()
}
