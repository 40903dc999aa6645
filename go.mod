module github.com/scdiffusion/gotorch-train

go 1.26.8

require github.com/nlpodyssey/gopickle v0.3.0

require (
	github.com/NVIDIA/go-nvml v0.13.4-1 // indirect
	github.com/shirou/gopsutil/v4 v4.26.10 // indirect
	golang.org/x/text v0.14.0 // indirect
)
