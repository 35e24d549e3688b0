package stream_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/batonhq/baton/proto/stream"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"default", "default", true},
		{"digits and underscore", "orders_2", true},
		{"max length", strings.Repeat("a", 40), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", 41), false},
		{"upper case", "Orders", false},
		{"dash", "a-b", false},
		{"space", "a b", false},
		{"non ascii", "é", false},
		{"quote", `a"b`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := stream.Validate(tt.id)
			if tt.ok && err != nil {
				t.Fatalf("Validate(%q) = %v, want nil", tt.id, err)
			}
			if !tt.ok && !errors.Is(err, stream.ErrInvalidID) {
				t.Fatalf("Validate(%q) = %v, want ErrInvalidID", tt.id, err)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if got := stream.SlotName("default"); got != "baton_slot_default" {
		t.Errorf("SlotName = %q", got)
	}
	if got := stream.PublicationName("default"); got != "baton_pub_default" {
		t.Errorf("PublicationName = %q", got)
	}
	// FNV-1a 32 of "default" is 0x933b5bde (documented in the README).
	if got := stream.LockObjID("default"); got != 0x933b5bde {
		t.Errorf("LockObjID(default) = %#x", got)
	}
	if stream.LockKey("a") == stream.LockKey("b") {
		t.Error("distinct ids share a lock key")
	}
}
