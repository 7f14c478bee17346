#version 300 es
// One fragment per element of C: a dot product of a row of A and a column of B, read from float textures. The
// browser provider's WebGL2 tier runs it (WebGL2 has no compute shaders); `#version` must stay the first line.
precision highp float; precision highp int;
uniform highp sampler2D A; uniform highp sampler2D B; uniform int K;
out vec4 outColor;
void main() {
  int col = int(gl_FragCoord.x); int row = int(gl_FragCoord.y);
  float acc = 0.0;
  for (int i = 0; i < K; i++) acc += texelFetch(A, ivec2(i, row), 0).r * texelFetch(B, ivec2(col, i), 0).r;
  outColor = vec4(acc, 0.0, 0.0, 1.0);
}
