// The baseline for Weir's benchmarks: Argo Rollouts' plugin transport as
// hashicorp/go-plugin runs it, with the standard library only. "server" is
// the plugin: a child process that prints a go-plugin style handshake and
// serves net/rpc (gob) on a unix socket. "client" is the controller side:
// it starts the plugin like go-plugin does, then calls Plugin.SetWeight with
// the whole Rollout by value on every call, and prints its measurements as
// JSON.
package main

import (
	"bufio"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

type ObjectMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp string            `json:"creationTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

type Resources struct {
	Limits   map[string]string `json:"limits,omitempty"`
	Requests map[string]string `json:"requests,omitempty"`
}

type Port struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
}

type HTTPGet struct {
	Path string `json:"path"`
	Port int32  `json:"port"`
}

type Probe struct {
	HTTPGet             *HTTPGet `json:"httpGet,omitempty"`
	InitialDelaySeconds int32    `json:"initialDelaySeconds,omitempty"`
	PeriodSeconds       int32    `json:"periodSeconds,omitempty"`
	TimeoutSeconds      int32    `json:"timeoutSeconds,omitempty"`
	FailureThreshold    int32    `json:"failureThreshold,omitempty"`
}

type Container struct {
	Name           string    `json:"name"`
	Image          string    `json:"image"`
	Args           []string  `json:"args,omitempty"`
	Env            []EnvVar  `json:"env,omitempty"`
	Resources      Resources `json:"resources,omitempty"`
	Ports          []Port    `json:"ports,omitempty"`
	ReadinessProbe *Probe    `json:"readinessProbe,omitempty"`
	LivenessProbe  *Probe    `json:"livenessProbe,omitempty"`
}

type PodSpec struct {
	Containers         []Container       `json:"containers"`
	ServiceAccountName string            `json:"serviceAccountName,omitempty"`
	NodeSelector       map[string]string `json:"nodeSelector,omitempty"`
}

type PodTemplate struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     PodSpec    `json:"spec"`
}

type Selector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

type VirtualService struct {
	Name   string   `json:"name"`
	Routes []string `json:"routes,omitempty"`
}

type Istio struct {
	VirtualService VirtualService `json:"virtualService"`
}

type ManagedRoute struct {
	Name string `json:"name"`
}

type TrafficRouting struct {
	Istio         *Istio         `json:"istio,omitempty"`
	ManagedRoutes []ManagedRoute `json:"managedRoutes,omitempty"`
}

type Pause struct {
	Duration string `json:"duration,omitempty"`
}

type AnalysisTemplateRef struct {
	TemplateName string `json:"templateName"`
}

type Arg struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

type StepAnalysis struct {
	Templates []AnalysisTemplateRef `json:"templates"`
	Args      []Arg                 `json:"args,omitempty"`
}

type Step struct {
	SetWeight *int32        `json:"setWeight,omitempty"`
	Pause     *Pause        `json:"pause,omitempty"`
	Analysis  *StepAnalysis `json:"analysis,omitempty"`
}

type Canary struct {
	CanaryService  string          `json:"canaryService"`
	StableService  string          `json:"stableService"`
	TrafficRouting *TrafficRouting `json:"trafficRouting,omitempty"`
	Steps          []Step          `json:"steps"`
}

type Strategy struct {
	Canary *Canary `json:"canary"`
}

type RolloutSpec struct {
	Replicas             *int32      `json:"replicas"`
	RevisionHistoryLimit *int32      `json:"revisionHistoryLimit,omitempty"`
	Selector             Selector    `json:"selector"`
	Template             PodTemplate `json:"template"`
	Strategy             Strategy    `json:"strategy"`
}

type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
	LastUpdateTime     string `json:"lastUpdateTime,omitempty"`
	LastTransitionTime string `json:"lastTransitionTime,omitempty"`
}

type RolloutStatus struct {
	Phase            string      `json:"phase,omitempty"`
	Message          string      `json:"message,omitempty"`
	CurrentPodHash   string      `json:"currentPodHash,omitempty"`
	StableRS         string      `json:"stableRS,omitempty"`
	CurrentStepIndex *int32      `json:"currentStepIndex,omitempty"`
	Replicas         int32       `json:"replicas,omitempty"`
	ReadyReplicas    int32       `json:"readyReplicas,omitempty"`
	Conditions       []Condition `json:"conditions,omitempty"`
}

type Rollout struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   ObjectMeta    `json:"metadata"`
	Spec       RolloutSpec   `json:"spec"`
	Status     RolloutStatus `json:"status"`
}

type WeightDestination struct {
	ServiceName     string
	PodTemplateHash string
	Weight          int32
}

// SetWeightAndVerifyWeightArgs is Argo's wire struct for SetWeight.
type SetWeightAndVerifyWeightArgs struct {
	Rollout                Rollout
	DesiredWeight          int32
	AdditionalDestinations []WeightDestination
}

// RpcError is Argo's error carrier (a string; empty means no error).
type RpcError struct {
	ErrorString string
}

// Plugin is the RPC server, as TrafficRouterRPCServer.
type Plugin struct{}

func init() {
	// As Argo registers its argument structs for its `args any` methods.
	gob.Register(SetWeightAndVerifyWeightArgs{})
	gob.Register(RpcError{})
}

// SetWeight validates the request the way a router would before writing.
// Like Argo's TrafficRouterRPCServer, it takes `args any` and asserts the type.
func (p *Plugin) SetWeight(raw any, resp *RpcError) error {
	var args *SetWeightAndVerifyWeightArgs
	switch a := raw.(type) {
	case SetWeightAndVerifyWeightArgs:
		args = &a
	case *SetWeightAndVerifyWeightArgs:
		args = a
	default:
		return fmt.Errorf("invalid args %T", raw)
	}
	stable := 100 - args.DesiredWeight
	for _, d := range args.AdditionalDestinations {
		stable -= d.Weight
	}
	if args.Rollout.Spec.Strategy.Canary == nil || stable < 0 {
		*resp = RpcError{ErrorString: "invalid weights"}
		return nil
	}
	*resp = RpcError{}
	return nil
}

func serve() {
	dir, err := os.MkdirTemp("", "plugin")
	if err != nil {
		panic(err)
	}
	socket := filepath.Join(dir, "plugin.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		panic(err)
	}
	server := rpc.NewServer()
	if err := server.RegisterName("Plugin", &Plugin{}); err != nil {
		panic(err)
	}
	// go-plugin's handshake line: core version, app version, network, address, protocol.
	fmt.Printf("1|1|unix|%s|netrpc\n", socket)
	for {
		conn, err := listener.Accept()
		if err != nil {
			return
		}
		go server.ServeConn(conn)
	}
}

func rss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line)
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted)-1)*p + 0.5)
	return sorted[i]
}

func drive(rolloutPath string, calls int) {
	raw, err := os.ReadFile(rolloutPath)
	if err != nil {
		panic(err)
	}
	var rollout Rollout
	if err := json.Unmarshal(raw, &rollout); err != nil {
		panic(err)
	}
	encoded, _ := json.Marshal(rollout)

	started := time.Now()
	cmd := exec.Command(os.Args[0], "server")
	out, err := cmd.StdoutPipe()
	if err != nil {
		panic(err)
	}
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		panic(err)
	}
	parts := strings.Split(strings.TrimSpace(line), "|")
	conn, err := net.Dial(parts[2], parts[3])
	if err != nil {
		panic(err)
	}
	client := rpc.NewClient(conn)
	call := func(weight int32) {
		var args any = SetWeightAndVerifyWeightArgs{Rollout: rollout, DesiredWeight: weight}
		var resp RpcError
		if err := client.Call("Plugin.SetWeight", &args, &resp); err != nil {
			panic(err)
		}
		if resp.ErrorString != "" {
			panic(resp.ErrorString)
		}
	}
	call(20)
	startup := time.Since(started)
	for i := 0; i < 500; i++ {
		call(20)
	}
	samples := make([]time.Duration, calls)
	for i := range samples {
		t := time.Now()
		call(20)
		samples[i] = time.Since(t)
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	result := map[string]int64{
		"rollout_json_bytes": int64(len(encoded)),
		"startup_ns":         startup.Nanoseconds(),
		"p50_ns":             percentile(samples, 0.5).Nanoseconds(),
		"p99_ns":             percentile(samples, 0.99).Nanoseconds(),
		"calls":              int64(calls),
		"plugin_rss_bytes":   rss(cmd.Process.Pid),
	}
	out2, _ := json.Marshal(result)
	fmt.Println(string(out2))
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "server" {
		serve()
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goplugin ROLLOUT.json [CALLS] | goplugin server")
		os.Exit(2)
	}
	calls := 5000
	if len(os.Args) > 2 {
		calls, _ = strconv.Atoi(os.Args[2])
	}
	drive(os.Args[1], calls)
}
