package settings_test

import (
	"testing"

	"github.com/batonhq/baton/settings"
)

func TestValidation(t *testing.T) {
	tests := []struct {
		name string
		err  error
		ok   bool
	}{
		{"url", settings.DatabaseURL("postgres://u@h:5432/db"), true},
		{"key value", settings.DatabaseURL("host=h dbname=db"), true},
		{"empty url", settings.DatabaseURL(""), false},
		{"other scheme", settings.DatabaseURL("mysql://u@h/db"), false},
		{"not a url", settings.DatabaseURL("hello"), false},
		{"listen", settings.Addr(":7070", false), true},
		{"dial without host", settings.Addr(":7070", true), false},
		{"no port", settings.Addr("localhost", false), false},
		{"bad port", settings.Addr(":99999x", false), false},
		{"text", settings.LogFormat("text"), true},
		{"xml", settings.LogFormat("xml"), false},
	}
	for _, tt := range tests {
		if (tt.err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok = %v", tt.name, tt.err, tt.ok)
		}
	}
}
