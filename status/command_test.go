package status_test

import (
	"errors"
	"io"
	"testing"

	"github.com/batonhq/baton/settings"
	"github.com/batonhq/baton/status"
)

const testURL = "postgres://u@h/db"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    status.Config
		setting string // non-empty: an error naming it is expected
	}{
		{name: "defaults", want: status.Config{DatabaseURL: testURL, StreamID: "default"}},
		{name: "flags", args: []string{"-json", "--replication-stream-id=orders"}, want: status.Config{DatabaseURL: testURL, StreamID: "orders", JSON: true}},
		{name: "double-dash json", args: []string{"--json"}, want: status.Config{DatabaseURL: testURL, StreamID: "default", JSON: true}},
		{name: "env stream", env: map[string]string{"REPLICATION_STREAM_ID": "s1"}, want: status.Config{DatabaseURL: testURL, StreamID: "s1"}},
		{name: "missing url", env: map[string]string{"DATABASE_URL": ""}, setting: "DATABASE_URL"},
		{name: "bad stream", args: []string{"--replication-stream-id=Bad"}, setting: "REPLICATION_STREAM_ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"DATABASE_URL": testURL}
			for k, v := range tt.env {
				env[k] = v
			}
			got, err := status.Parse("x status", tt.args, func(k string) string { return env[k] }, io.Discard)
			if tt.setting != "" {
				var se *settings.Error
				if !errors.As(err, &se) || se.Setting != tt.setting {
					t.Fatalf("Parse = %v, want an error naming %s", err, tt.setting)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
