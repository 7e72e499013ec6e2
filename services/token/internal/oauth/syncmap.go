package oauth

import (
	"sync"
	"time"
)

// syncMap is a small mutex-guarded map of expiry times.
type syncMap struct {
	mu sync.RWMutex
	m  map[string]time.Time
}

func (s *syncMap) Load(k string) (time.Time, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.m[k]
	return v, ok
}

func (s *syncMap) Store(k string, v time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]time.Time{}
	}
	s.m[k] = v
}

func (s *syncMap) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

func (s *syncMap) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.m)
}
