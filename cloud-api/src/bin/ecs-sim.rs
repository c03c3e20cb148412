//! `ecs-sim`: the ECS-compatible simulator over HTTP (landing in the next commit).

fn main() {
    eprintln!("ecs-sim: the HTTP server is not built yet");
    std::process::exit(2);
}
