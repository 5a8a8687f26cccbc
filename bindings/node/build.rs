fn main() {
    // Platform link settings for a Node addon (on macOS: leave N-API symbols undefined).
    napi_build::setup();
}
