package server

import (
	"context"
	"errors"
	"net"
	"sync"
)

// memListener is an in-process net.Listener: the HTTP gateway reaches the
// gRPC server through it, so the gateway hop never touches the network, the
// gateway holds no client certificate whose identity HTTP callers could
// borrow, and interceptors can tell gateway traffic (GatewayAddr) apart from
// direct gRPC peers — only the gateway's forwarded headers are trusted.
type memListener struct {
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// GatewayAddr is the network address of connections from the in-process
// HTTP gateway.
type GatewayAddr struct{}

// Network implements net.Addr.
func (GatewayAddr) Network() string { return "mem" }

// String implements net.Addr.
func (GatewayAddr) String() string { return "gateway" }

// IsGatewayPeer reports whether addr is the in-process gateway.
func IsGatewayPeer(addr net.Addr) bool {
	_, ok := addr.(GatewayAddr)
	return ok
}

var errListenerClosed = errors.New("listener closed")

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errListenerClosed
	}
}

func (l *memListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return GatewayAddr{} }

// dial connects a new in-memory connection to the listener.
func (l *memListener) dial(ctx context.Context, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- &memConn{Conn: server}:
		return &memConn{Conn: client}, nil
	case <-l.done:
		return nil, errListenerClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// memConn reports GatewayAddr on both ends.
type memConn struct{ net.Conn }

func (c *memConn) LocalAddr() net.Addr  { return GatewayAddr{} }
func (c *memConn) RemoteAddr() net.Addr { return GatewayAddr{} }
