package server

import (
	"context"
	"errors"
	"fmt"
)

// closerStack closes what start-up opened, in reverse order, also when
// start-up fails half-way (SpiceDB's closeable stack).
type closerStack struct {
	names []string
	fns   []func(context.Context) error
}

// push registers fn to be called on close; name appears in errors.
func (s *closerStack) push(name string, fn func(context.Context) error) {
	s.names = append(s.names, name)
	s.fns = append(s.fns, fn)
}

// close runs every registered function, newest first, and joins the errors.
// It is safe to call more than once: each function runs once.
func (s *closerStack) close(ctx context.Context) error {
	var errs []error
	for i := len(s.fns) - 1; i >= 0; i-- {
		if err := s.fns[i](ctx); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", s.names[i], err))
		}
	}
	s.names, s.fns = nil, nil
	return errors.Join(errs...)
}
