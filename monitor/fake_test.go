package monitor

import "fmt"

// fakeNVML is a scripted NVML for the decision logic (co-tenants,
// available memory, microbatch choice). The product uses *NVMLLibrary.
type fakeNVML struct {
	bus     string
	mem     DeviceMemory
	procs   []GPUProcess
	driver  string
	down    bool
	closed  int
	memErr  error
	procErr error
}

func (f *fakeNVML) Available() bool { return !f.down }

func (f *fakeNVML) check(bus string) error {
	if f.down {
		return ErrNVMLUnavailable
	}
	if NormalizePCIBusID(bus) != NormalizePCIBusID(f.bus) {
		return fmt.Errorf("fake: no device %s", bus)
	}
	return nil
}

func (f *fakeNVML) DeviceMemory(bus string) (DeviceMemory, error) {
	if err := f.check(bus); err != nil {
		return DeviceMemory{}, err
	}
	return f.mem, f.memErr
}

func (f *fakeNVML) ComputeProcesses(bus string) ([]GPUProcess, error) {
	if err := f.check(bus); err != nil {
		return nil, err
	}
	return append([]GPUProcess(nil), f.procs...), f.procErr
}

func (f *fakeNVML) DriverVersion() (string, error) {
	if f.down {
		return "", ErrNVMLUnavailable
	}
	return f.driver, nil
}

func (f *fakeNVML) Close() error { f.closed++; return nil }
