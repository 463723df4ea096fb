// Command kube-apiserver runs a real Kubernetes API server on an etcd embedded in the same
// process, for the chart's server-side checks (no kubelet: pods never run).
//
//	kube-apiserver --etcd-dir DIR --etcd-port PORT -- <kube-apiserver flags>
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	flags := flag.NewFlagSet("etcd", flag.ExitOnError)
	dir := flags.String("etcd-dir", "", "etcd's data directory")
	port := flags.Int("etcd-port", 0, "etcd's client port on 127.0.0.1")
	peer := flags.Int("etcd-peer-port", 0, "etcd's peer port on 127.0.0.1")
	_ = flags.Parse(os.Args[1:])
	if *dir == "" || *port == 0 || *peer == 0 {
		fmt.Fprintln(os.Stderr, "kube-apiserver: --etcd-dir, --etcd-port and --etcd-peer-port are required")
		os.Exit(2)
	}
	etcd, err := startEtcd(*dir, *port, *peer)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-apiserver: etcd:", err)
		os.Exit(1)
	}
	defer etcd.Close()
	command := app.NewAPIServerCommand()
	command.SetArgs(append([]string{fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", *port)}, flags.Args()...))
	os.Exit(cli.Run(command))
}

func startEtcd(dir string, port, peer int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "error"
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port))
	peers, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peer))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peers}, []url.URL{*peers}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-etcd.Server.ReadyNotify():
		return etcd, nil
	case <-time.After(60 * time.Second):
		etcd.Close()
		return nil, fmt.Errorf("not ready within 60 s")
	}
}
