// Package dist runs data-parallel training over libtorch's c10d: it reads
// a process's place in the job from the environment that torchrun,
// Kubeflow's PyTorchJob or Slurm set (World), joins the process group
// (Join) and provides what the trainers need on top of the collectives: the
// batch shard of each rank and a cheap per-step agreement so that a stop
// request, an out-of-memory error or a failure on one rank stops every rank
// at the same step (Comm.Exchange).
//
// Legend: W = world size (processes), r = rank, B = global batch.
package dist

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrWorld marks an inconsistent or incomplete launcher environment (a
// usage error: the variables are named in the message).
var ErrWorld = errors.New("dist: bad launcher environment")

// Launcher names what described the world.
type Launcher string

// Launchers.
const (
	Single   Launcher = ""         // no launcher: one process
	Torchrun Launcher = "torchrun" // torch.distributed.run (TORCHELASTIC_RUN_ID set)
	EnvVars  Launcher = "env"      // RANK/WORLD_SIZE/MASTER_* (PyTorchJob, mpirun wrappers, by hand)
	Slurm    Launcher = "slurm"    // srun: SLURM_PROCID/SLURM_NTASKS
)

// World is this process's place in a data-parallel job.
type World struct {
	// Rank is this process's index in [0, Size); LocalRank its index on
	// this node (the CUDA device of one-process-per-GPU jobs).
	Rank, Size, LocalRank int
	// MasterAddr and MasterPort locate the TCPStore (hosted by rank 0, or by
	// torchrun's agent with AgentStore).
	MasterAddr string
	MasterPort int
	// AgentStore: torchrun's agent hosts the store (its static rendezvous,
	// TORCHELASTIC_USE_AGENT_STORE=True); every rank connects as a client
	// and prefixes its keys with StorePrefix, as torch.distributed does.
	AgentStore  bool
	StorePrefix string
	// Interface is the network interface Gloo binds (GLOO_SOCKET_IFNAME,
	// first entry); empty: the address of this host's name.
	Interface string
	Launcher  Launcher
}

// Distributed reports whether the job has more than one process.
func (w World) Distributed() bool { return w.Size > 1 }

// String describes the world for log headers.
func (w World) String() string {
	if !w.Distributed() {
		return "single process"
	}
	store := fmt.Sprintf("store %s:%d hosted by rank 0", w.MasterAddr, w.MasterPort)
	if w.AgentStore {
		store = fmt.Sprintf("store %s:%d hosted by torchrun's agent", w.MasterAddr, w.MasterPort)
	}
	return fmt.Sprintf("rank %d of %d (local rank %d, %s, %s)", w.Rank, w.Size, w.LocalRank, w.Launcher, store)
}

// FromEnv reads the world from the environment (getenv is os.Getenv in
// programs, a map lookup in tests):
//
//   - WORLD_SIZE set (torchrun, PyTorchJob, by hand): RANK, WORLD_SIZE,
//     LOCAL_RANK (default 0), MASTER_ADDR, MASTER_PORT; with
//     TORCHELASTIC_USE_AGENT_STORE=True the store is torchrun's agent's, under
//     the prefix /worker/attempt_$TORCHELASTIC_RESTART_COUNT.
//   - else SLURM_NTASKS set (srun): SLURM_PROCID, SLURM_NTASKS,
//     SLURM_LOCALID; the master is MASTER_ADDR, else SLURM_LAUNCH_NODE_IPADDR
//     (the node srun was started from: the batch script's, the job's first
//     node), else the first host of SLURM_STEP_NODELIST/SLURM_JOB_NODELIST; the
//     port MASTER_PORT, else 20000 + SLURM_JOB_ID mod 20000 (the same on every
//     task of a job, different between concurrent jobs).
//   - else a single process.
func FromEnv(getenv func(string) string) (World, error) {
	w := World{Size: 1}
	if ifs := getenv("GLOO_SOCKET_IFNAME"); ifs != "" {
		w.Interface = strings.TrimSpace(strings.Split(ifs, ",")[0])
	}
	get := func(name string, def int, min int) (int, error) {
		s := strings.TrimSpace(getenv(name))
		if s == "" {
			if def < 0 {
				return 0, fmt.Errorf("%w: %s is not set", ErrWorld, name)
			}
			return def, nil
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < min {
			return 0, fmt.Errorf("%w: %s=%q is not an integer >= %d", ErrWorld, name, s, min)
		}
		return v, nil
	}
	var err error
	switch {
	case getenv("WORLD_SIZE") != "":
		w.Launcher = EnvVars
		if getenv("TORCHELASTIC_RUN_ID") != "" {
			w.Launcher = Torchrun
		}
		if w.Size, err = get("WORLD_SIZE", -1, 1); err != nil {
			return w, err
		}
		if w.Rank, err = get("RANK", -1, 0); err != nil {
			return w, err
		}
		if w.LocalRank, err = get("LOCAL_RANK", 0, 0); err != nil {
			return w, err
		}
		if w.Size > 1 {
			w.MasterAddr = strings.TrimSpace(getenv("MASTER_ADDR"))
			if w.MasterAddr == "" {
				return w, fmt.Errorf("%w: WORLD_SIZE=%d but MASTER_ADDR is not set", ErrWorld, w.Size)
			}
			if w.MasterPort, err = get("MASTER_PORT", -1, 1); err != nil {
				return w, err
			}
		}
		if strings.TrimSpace(getenv("TORCHELASTIC_USE_AGENT_STORE")) == "True" {
			n, err := get("TORCHELASTIC_RESTART_COUNT", -1, 0)
			if err != nil {
				return w, err
			}
			w.AgentStore, w.StorePrefix = true, "/worker/attempt_"+strconv.Itoa(n)
		}
	case getenv("SLURM_NTASKS") != "":
		w.Launcher = Slurm
		if w.Size, err = get("SLURM_NTASKS", -1, 1); err != nil {
			return w, err
		}
		if w.Rank, err = get("SLURM_PROCID", -1, 0); err != nil {
			return w, err
		}
		if w.LocalRank, err = get("SLURM_LOCALID", 0, 0); err != nil {
			return w, err
		}
		if w.Size > 1 {
			w.MasterAddr = strings.TrimSpace(getenv("MASTER_ADDR"))
			if w.MasterAddr == "" {
				w.MasterAddr = strings.TrimSpace(getenv("SLURM_LAUNCH_NODE_IPADDR"))
			}
			if w.MasterAddr == "" {
				nodes := getenv("SLURM_STEP_NODELIST")
				if nodes == "" {
					nodes = getenv("SLURM_JOB_NODELIST")
				}
				if w.MasterAddr, err = FirstHost(nodes); err != nil {
					return w, fmt.Errorf("%w: no MASTER_ADDR, SLURM_LAUNCH_NODE_IPADDR or node list: %v", ErrWorld, err)
				}
			}
			if getenv("MASTER_PORT") != "" {
				if w.MasterPort, err = get("MASTER_PORT", -1, 1); err != nil {
					return w, err
				}
			} else {
				job, err := get("SLURM_JOB_ID", -1, 0)
				if err != nil {
					return w, fmt.Errorf("%w: set MASTER_PORT (no SLURM_JOB_ID to derive it from)", ErrWorld)
				}
				w.MasterPort = 20000 + job%20000
			}
		}
	default:
		return w, nil
	}
	if w.Rank >= w.Size {
		return w, fmt.Errorf("%w: rank %d is not below the world size %d", ErrWorld, w.Rank, w.Size)
	}
	if w.MasterPort > 65535 {
		return w, fmt.Errorf("%w: MASTER_PORT %d is not a TCP port", ErrWorld, w.MasterPort)
	}
	return w, nil
}

// FirstHost returns the first host name of a Slurm host list such as
// "gpu[07-09,12],login1" (gpu07) or "node1,node2" (node1).
func FirstHost(list string) (string, error) {
	list = strings.TrimSpace(list)
	if list == "" {
		return "", errors.New("empty host list")
	}
	// The first entry ends at a comma outside brackets.
	depth, end := 0, len(list)
	for i, c := range list {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 && end == len(list) {
				end = i
			}
		}
	}
	first := list[:end]
	// Each bracket group stands for its first value: gpu[07-09] -> gpu07.
	for {
		open := strings.IndexByte(first, '[')
		if open < 0 {
			break
		}
		close := strings.IndexByte(first[open:], ']')
		if close < 0 {
			return "", fmt.Errorf("bad host list %q", list)
		}
		close += open
		lo := strings.Split(strings.Split(first[open+1:close], ",")[0], "-")[0]
		if lo == "" {
			return "", fmt.Errorf("bad host list %q", list)
		}
		first = first[:open] + lo + first[close+1:]
	}
	if strings.ContainsAny(first, "]") || first == "" {
		return "", fmt.Errorf("bad host list %q", list)
	}
	return first, nil
}
