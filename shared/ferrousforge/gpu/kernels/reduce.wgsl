// Workgroup reductions over WG invocations (the including kernel declares `const WG`, a multiple of 16
// up to 256), each giving one value and getting the sum or the maximum back. Call them from uniform
// control flow. The values are combined 16 at a time in order, then those results in order: two
// barriers, where a tree takes 2 + log2(WG) (a CPU adapter pays for every barrier on every group of
// invocations of every workgroup); the order is fixed by WG alone.
var<workgroup> part: array<f32, WG>;
var<workgroup> part16: array<f32, 16>;

fn reduce_sum(t: u32, value: f32) -> f32 {
  part[t] = value;
  workgroupBarrier();
  if (t < WG / 16u) {
    var s = part[16u * t];
    for (var j = 1u; j < 16u; j++) { s += part[16u * t + j]; }
    part16[t] = s;
  }
  workgroupBarrier();  // after it `part` is free again; `part16` is rewritten only past the next call's first
  var out = part16[0];
  for (var j = 1u; j < WG / 16u; j++) { out += part16[j]; }
  return out;
}

fn reduce_max(t: u32, value: f32) -> f32 {
  part[t] = value;
  workgroupBarrier();
  if (t < WG / 16u) {
    var s = part[16u * t];
    for (var j = 1u; j < 16u; j++) { s = max(s, part[16u * t + j]); }
    part16[t] = s;
  }
  workgroupBarrier();
  var out = part16[0];
  for (var j = 1u; j < WG / 16u; j++) { out = max(out, part16[j]); }
  return out;
}
