// Command etcdmember runs one member of a multi-member etcd cluster in its
// own process, for the cluster harness: a process per member is what lets
// the harness kill one (SIGKILL) while the others elect a new leader.
// lib/etcdembed starts single-member servers only, so this uses etcd's embed
// package directly, with the initial-cluster settings.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "etcdmember:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("etcdmember", flag.ContinueOnError)
	name := fs.String("name", "", "member name")
	dir := fs.String("data-dir", "", "data directory")
	client := fs.String("client-addr", "", "client listen host:port")
	peer := fs.String("peer-addr", "", "peer listen host:port")
	cluster := fs.String("initial-cluster", "", "name=http://host:port,... of every member")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *dir == "" || *client == "" || *peer == "" || *cluster == "" {
		return errors.New("settings name, data-dir, client-addr, peer-addr and initial-cluster are required")
	}
	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dir
	cu := url.URL{Scheme: "http", Host: *client}
	pu := url.URL{Scheme: "http", Host: *peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = *cluster
	cfg.InitialClusterToken = "mcpid-cluster-harness"
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.UnsafeNoFsync = true // throwaway test data; the harness kills processes, not machines
	cfg.EnableGRPCGateway = false
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("while starting: %w", err)
	case <-time.After(60 * time.Second):
		return errors.New("not ready after 60s")
	}
	fmt.Fprintln(os.Stderr, "etcdmember: ready", *name)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
		return nil
	case err := <-e.Err():
		return err
	}
}
