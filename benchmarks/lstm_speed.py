"""Forward + backward time of the reference LSTM against torch.nn.LSTM, one run, same shapes.

Default shapes: N=64, T=16, D=H=512, float32. Target on CPU: at most 1.3x torch.nn.LSTM.

    python -m benchmarks.lstm_speed [--device cpu|cuda|all] [--repeats 30]
"""

import argparse
import statistics
import time

import torch

from solution.captioning import LSTM


def forward_backward(layer_call, params, x, h0):
    """A closure running one forward + backward and clearing the gradients."""
    def run():
        layer_call(x, h0).sum().backward()
        for p in params:
            p.grad = None
    return run


def compare(device, N, T, D, H, repeats):
    """Median seconds of each implementation and the median of per-round ratios.

    The two run alternately, round by round, so that a slow moment of a shared machine
    hits both rather than one of them.
    """
    torch.manual_seed(0)
    x = torch.randn(N, T, D, device=device, requires_grad=True)
    h0 = torch.randn(N, H, device=device, requires_grad=True)
    ours = LSTM(D, H).to(device)
    builtin = torch.nn.LSTM(D, H, batch_first=True).to(device)
    c0 = torch.zeros(1, N, H, device=device)
    runs = {
        "reference": forward_backward(ours, [*ours.parameters(), x, h0], x, h0),
        "torch.nn.LSTM": forward_backward(lambda x, h0: builtin(x, (h0[None], c0))[0],
                                          [*builtin.parameters(), x, h0], x, h0),
    }
    if device == "cpu":
        # On CPU nn.LSTM runs oneDNN's fused RNN primitive, which plain tensor ops cannot
        # reach; without it nn.LSTM runs the same kind of GEMMs as the reference does.
        def builtin_without_onednn(x, h0):
            with torch.backends.mkldnn.flags(enabled=False):
                return builtin(x, (h0[None], c0))[0]

        runs["torch.nn.LSTM, oneDNN off"] = forward_backward(
            builtin_without_onednn, [*builtin.parameters(), x, h0], x, h0)
    for run in runs.values():
        for _ in range(3):
            run()
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    ratios = {name: statistics.median(a / b for a, b in zip(seconds["reference"], values))
              for name, values in seconds.items() if name != "reference"}
    return medians, ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 16, 512, 512], metavar=("N", "T", "D", "H"))
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("cuda: no GPU on this machine, skipped")
        devices.remove("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    N, T, D, H = args.shape
    print(f"LSTM forward+backward, N={N} T={T} D={D} H={H} float32, median of {args.repeats} alternating rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices:
        medians, ratios = compare(device, N, T, D, H, args.repeats)
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        print(f"{device} [{name}]: reference {medians['reference'] * 1e3:.2f} ms")
        for baseline, ratio in ratios.items():
            target = "  (target <= 1.3x)" if baseline == "torch.nn.LSTM" and device == "cpu" else ""
            print(f"  vs {baseline:<26} {medians[baseline] * 1e3:7.2f} ms: ratio {ratio:.2f}x "
                  f"(median of per-round ratios){target}")


if __name__ == "__main__":
    main()
