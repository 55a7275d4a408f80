terraform {
  required_version = ">= 1.5"
}

variable "environment" {
  type = string
}

variable "replicas" {
  type    = number
  default = 2
}

# The network stack's state (local backend in this example; S3/GCS in real life).
data "terraform_remote_state" "network" {
  backend = "local"
  config = {
    path = "${path.module}/../network/terraform.tfstate"
  }
}

module "service" {
  source      = "../../modules/service"
  name        = "web-${var.environment}"
  replicas    = var.replicas
  network     = data.terraform_remote_state.network.outputs.vpc_cidr
  policy_json = file("${path.module}/policy.json")
}

output "service_id" {
  value = module.service.id
}
