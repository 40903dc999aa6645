package dist

import (
	"errors"
	"testing"
)

func TestFromEnv(t *testing.T) {
	torchrun := map[string]string{
		"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "29500",
		"TORCHELASTIC_RUN_ID": "abc", "TORCHELASTIC_USE_AGENT_STORE": "False", "TORCHELASTIC_RESTART_COUNT": "0",
	}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	slurm := map[string]string{"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "3", "SLURM_JOB_ID": "123456",
		"SLURM_LAUNCH_NODE_IPADDR": "10.0.0.5", "SLURM_JOB_NODELIST": "gpu[07-08]"}
	cases := []struct {
		name string
		env  map[string]string
		want World
		err  bool
	}{
		{"nothing: one process", nil, World{Size: 1}, false},
		{"torchrun, rank 0 hosts the store", torchrun,
			World{Rank: 1, Size: 4, LocalRank: 1, MasterAddr: "node7", MasterPort: 29500, Launcher: Torchrun}, false},
		{"torchrun's agent store (static rendezvous)", with(torchrun, "TORCHELASTIC_USE_AGENT_STORE", "True", "TORCHELASTIC_RESTART_COUNT", "2"),
			World{Rank: 1, Size: 4, LocalRank: 1, MasterAddr: "node7", MasterPort: 29500, Launcher: Torchrun, AgentStore: true, StorePrefix: "/worker/attempt_2"}, false},
		{"PyTorchJob: no LOCAL_RANK", map[string]string{"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456"},
			World{Size: 2, MasterAddr: "job-master-0", MasterPort: 23456, Launcher: EnvVars}, false},
		{"world of one needs no master", map[string]string{"RANK": "0", "WORLD_SIZE": "1"}, World{Size: 1, Launcher: EnvVars}, false},
		{"Gloo interface", with(torchrun, "GLOO_SOCKET_IFNAME", "eth1,eth2"),
			World{Rank: 1, Size: 4, LocalRank: 1, MasterAddr: "node7", MasterPort: 29500, Launcher: Torchrun, Interface: "eth1"}, false},
		{"srun: launch node's address, port from the job id", slurm,
			World{Rank: 3, Size: 8, LocalRank: 3, MasterAddr: "10.0.0.5", MasterPort: 20000 + 123456%20000, Launcher: Slurm}, false},
		{"srun: MASTER_ADDR and MASTER_PORT win", with(slurm, "MASTER_ADDR", "login", "MASTER_PORT", "4000"),
			World{Rank: 3, Size: 8, LocalRank: 3, MasterAddr: "login", MasterPort: 4000, Launcher: Slurm}, false},
		{"srun: first node of the list", with(slurm, "SLURM_LAUNCH_NODE_IPADDR", ""),
			World{Rank: 3, Size: 8, LocalRank: 3, MasterAddr: "gpu07", MasterPort: 20000 + 123456%20000, Launcher: Slurm}, false},
		{"torchrun inside srun: torchrun's variables win", with(torchrun, "SLURM_NTASKS", "2", "SLURM_PROCID", "1"),
			World{Rank: 1, Size: 4, LocalRank: 1, MasterAddr: "node7", MasterPort: 29500, Launcher: Torchrun}, false},
		{"no MASTER_ADDR", with(torchrun, "MASTER_ADDR", ""), World{}, true},
		{"rank beyond the world", with(torchrun, "RANK", "4"), World{}, true},
		{"bad WORLD_SIZE", with(torchrun, "WORLD_SIZE", "two"), World{}, true},
		{"agent store without restart count", with(torchrun, "TORCHELASTIC_USE_AGENT_STORE", "True", "TORCHELASTIC_RESTART_COUNT", ""), World{}, true},
		{"port out of range", with(torchrun, "MASTER_PORT", "70000"), World{}, true},
		{"srun without any master", with(slurm, "SLURM_LAUNCH_NODE_IPADDR", "", "SLURM_JOB_NODELIST", ""), World{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromEnv(func(k string) string { return tc.env[k] })
			if tc.err {
				if !errors.Is(err, ErrWorld) {
					t.Fatalf("err = %v, want ErrWorld", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestFirstHost(t *testing.T) {
	for in, want := range map[string]string{
		"node1":                  "node1",
		"node1,node2":            "node1",
		"gpu[07-09,12],login1":   "gpu07",
		"rack[2-3]-n[01-04]":     "rack2-n01",
		"a[5]":                   "a5",
		" x[010-012] ":           "x010",
		"cn[001-002],gpu[10-11]": "cn001",
	} {
		if got, err := FirstHost(in); err != nil || got != want {
			t.Errorf("FirstHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a]b[", "a[]"} {
		if _, err := FirstHost(bad); err == nil {
			t.Errorf("FirstHost(%q): no error", bad)
		}
	}
}

func TestShard(t *testing.T) {
	var single *Comm
	if off, n, err := single.Shard(7); err != nil || off != 0 || n != 7 {
		t.Errorf("single process: %d %d %v", off, n, err)
	}
	c := &Comm{world: World{Rank: 2, Size: 4}}
	if off, n, err := c.Shard(128); err != nil || off != 64 || n != 32 {
		t.Errorf("rank 2 of 4, batch 128: %d %d %v", off, n, err)
	}
	if _, _, err := c.Shard(130); err == nil {
		t.Error("batch 130 over 4 ranks: no error")
	}
}
