package settings

import (
	"io"
	"sync"
)

// HelpWriter returns w with header written before the first write to it:
// pass it to Binder.Parse as the help writer, and -help prints header (a
// binary's commands) then the command's flags. Safe for concurrent use.
func HelpWriter(w io.Writer, header string) io.Writer {
	return &helpWriter{w: w, header: header}
}

type helpWriter struct {
	w      io.Writer
	header string
	once   sync.Once
	err    error
}

func (h *helpWriter) Write(p []byte) (int, error) {
	h.once.Do(func() { _, h.err = io.WriteString(h.w, h.header) })
	if h.err != nil {
		return 0, h.err
	}
	return h.w.Write(p)
}
