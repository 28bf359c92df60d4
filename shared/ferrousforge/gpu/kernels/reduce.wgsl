// Workgroup reductions over WG invocations (the including kernel declares `const WG`), each giving
// one value and getting the sum or the maximum back. Call them from uniform control flow.
var<workgroup> part: array<f32, WG>;

fn reduce_sum(t: u32, value: f32) -> f32 {
  part[t] = value;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { part[t] += part[t + s]; }
    workgroupBarrier();
  }
  let out = part[0];
  workgroupBarrier();
  return out;
}

fn reduce_max(t: u32, value: f32) -> f32 {
  part[t] = value;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { part[t] = max(part[t], part[t + s]); }
    workgroupBarrier();
  }
  let out = part[0];
  workgroupBarrier();
  return out;
}
