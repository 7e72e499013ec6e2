package server

import (
	"context"
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthService is grpc's health server whose Watch streams end when the
// server shuts down (after health has gone NOT_SERVING and been observed).
type healthService struct {
	*health.Server
	closer *watchCloser
}

// Watch runs the standard Watch with a context that shutdown cancels.
func (h *healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(h.closer.ctx, cancel)
	defer stop()
	return h.Server.Watch(req, &watchStream{Health_WatchServer: stream, ctx: ctx})
}

type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w *watchStream) Context() context.Context { return w.ctx }

// watchCloser signals all Watch streams to end.
type watchCloser struct {
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
}

func newWatchCloser() *watchCloser {
	ctx, cancel := context.WithCancel(context.Background())
	return &watchCloser{ctx: ctx, cancel: cancel}
}

func (w *watchCloser) close() { w.once.Do(w.cancel) }
